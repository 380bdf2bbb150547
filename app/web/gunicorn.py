"""gunicorn settings for the web process (``gunicorn --config python:app.web.gunicorn``)."""

from typing import Any

from app.logs import gunicorn_log_config
from app.metrics import enable_multiprocess
from app.metrics.files import forget_process
from config.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.web_host}:{_settings.web_port}"
workers = _settings.web_workers
threads = _settings.web_threads
# gthread, writing gunicorn's own refusals (414, 431, 400) in the API's JSON error shape.
worker_class = "app.web.gunicorn_worker.JsonErrorWorker"
limit_request_line = _settings.max_request_line_bytes
limit_request_field_size = _settings.max_header_bytes
timeout = 30
graceful_timeout = 20
accesslog = "-"

# Logs in BOOMERANG_LOG_FORMAT: gunicorn's own, each request's access line, and the app's.
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
