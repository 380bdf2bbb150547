"""gunicorn settings for the web process (``gunicorn --config python:config.gunicorn``)."""

import os
from typing import Any

from app.logs import gunicorn_log_config
from app.metrics import enable_multiprocess
from app.metrics_files import forget_process
from config.settings import Settings

host = os.environ.get("BOOMERANG_WEB_HOST", "127.0.0.1")
bind = f"{host}:{os.environ.get('BOOMERANG_WEB_PORT', '8000')}"
workers = int(os.environ.get("BOOMERANG_WEB_WORKERS", "2"))
threads = int(os.environ.get("BOOMERANG_WEB_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
accesslog = "-"

# Logs in BOOMERANG_LOG_FORMAT: gunicorn's own, each request's access line, and the app's.
_settings = Settings.from_env()
logconfig_dict = gunicorn_log_config(_settings)
# The text format's access line; the JSON format picks these atoms into fields instead.
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s" request_id=%({x-request-id}o)s'


def on_starting(_server: object) -> None:
    """In the master, before any worker forks: every worker counts in the shared directory."""
    enable_multiprocess(_settings.metrics_dir)


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges (its counters stay in the totals)."""
    try:
        forget_process(worker.pid)
    except Exception:
        # This runs in gunicorn's master: an error here (a full disk, a damaged file) would stop
        # the whole web process over a metric.
        server.log.exception("could not fold the metrics of worker %s", worker.pid)
