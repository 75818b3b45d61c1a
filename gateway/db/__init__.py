"""The database: credentials, pools reached only through a ``Decision``, execution, streaming, encoding.

Also the view catalogue and the accounts' privileges (plan, check, drift).
"""
