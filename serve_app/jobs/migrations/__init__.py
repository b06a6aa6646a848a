"""Alembic scripts of the job store (a package, so they ship with ``serve_app``)."""
