"""gunicorn settings for the web process (``gunicorn --config python:config.gunicorn``)."""

import os

host = os.environ.get("BOOMERANG_WEB_HOST", "127.0.0.1")
bind = f"{host}:{os.environ.get('BOOMERANG_WEB_PORT', '8000')}"
workers = int(os.environ.get("BOOMERANG_WEB_WORKERS", "2"))
threads = 4
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
accesslog = "-"
