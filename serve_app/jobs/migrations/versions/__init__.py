"""Migration scripts, applied in ``down_revision`` order by ``serve_app.jobs.migrate``."""
