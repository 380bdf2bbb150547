"""The module the ``celery`` command loads (``celery -A workers.main``).

The one place an app is built at import time, because Celery's CLI needs an instance to find.
"""

from workers.celery_app import create_celery

app = create_celery()
