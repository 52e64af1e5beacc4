"""Alembic environment: vimark runs migrations in-process on the Store's connection."""

from alembic import context

from vimark.server.store import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
