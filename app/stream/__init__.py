"""The stream process: long polls, per-job Server-Sent Events and the per-tenant event feed.

Long-lived connections would each hold one of gunicorn's threads, so they are served by their own
aiohttp process (``boomerang stream``), under the ``/stream`` prefix of the API's origin.
Postgres stays the truth: a waiter reads the current state first, then waits for an announcement
(Redis pub/sub, published after commit) or its timer, and reads again.
"""
