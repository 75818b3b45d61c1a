"""The shared state store on MariaDB (``state.store: mariadb``): managed policy documents, access requests, aliases.

Every replica of the gateway reads and writes the same store, so an admin edit,
an access request or an approval made through one replica is seen by all of
them; each replica watches the store's revision row (``gateway.state.source``).
"""
