"""Policy: files -> typed ``PolicySet``; ``decide`` (pure); the live store; edits; access requests.

Also what the caller's own grants look like (``views``). Knows nothing of database connections or HTTP.
"""
