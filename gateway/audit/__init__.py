"""The audit log: records, the group-committing writer, the stores (SQLite, MariaDB), query, verify, export."""
