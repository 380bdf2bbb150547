"""The naive reference: one Celery task per callback, requests.post, one INSERT per attempt."""
