"""The stream process on the real stack: gunicorn, workers, beat and ``boomerang stream``, with a
private Redis so that this module's announcements reach only its own stream process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.settings import database_name, worker_number
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(worker_id, tmp_path_factory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("stream-stack")
    with running_stack(database_name("stream", worker_number(worker_id)), log_dir) as stack:
        yield stack
