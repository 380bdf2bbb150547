"""The module the ``celery`` command loads (``celery -A workers.main``).

The one place an app is built at import time, because Celery's CLI needs an instance to find.
"""

from celery.signals import worker_init

from app.logs import connect_celery_logging
from app.metrics import enable_multiprocess
from workers.celery_app import create_celery

app = create_celery()
connect_celery_logging(app.boomerang.settings)  # type: ignore[attr-defined]


@worker_init.connect(weak=False)
def _count_in_the_machines_metrics_dir(**_kwargs: object) -> None:
    # Before the pool forks, so every pool process counts where /metrics and
    # `boomerang metrics` read.
    enable_multiprocess(app.boomerang.settings.metrics_dir)  # type: ignore[attr-defined]
