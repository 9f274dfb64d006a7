"""Alembic revisions, oldest first. A revision is frozen once released: it spells its own
columns instead of importing ``schema``, so that later schema edits do not rewrite history."""
