"""Server-side commands: ``gateway serve``, ``policy``, ``audit``, ``db``, ``demo``, ``dev-token``."""
