"""Identity-aware database access gateway for MariaDB."""
