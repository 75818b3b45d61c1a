"""The engineer's and admin's client: one HTTP client, login, the token cache, query, shell, admin commands.

Independent of the server's packages.
"""
