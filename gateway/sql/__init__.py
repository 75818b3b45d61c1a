"""Statement analysis: SQL text -> ``Statement`` (kind, tables, functions, the text that runs).

Read as MariaDB reads it; knows nothing of identity, policy or the database.
"""
