"""Alembic migrations of the store (``env.py`` and ``versions/``), run by ``open_store`` at
start under a lock. New revision: ``alembic -x`` is not needed; see docs/store.md."""
