"""Identity: bearer tokens -> a canonical ``Identity`` (OIDC discovery and keys, names, aliases, the dev issuer).

Knows nothing of policy, SQL or the database.
"""
