"""Alembic environment of the central server: runs on the connection the server hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="sync_server_version")
with context.begin_transaction():
    context.run_migrations()
