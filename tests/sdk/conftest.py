"""The Python client's tests: the real stack, one for the whole module that uses it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.settings import database_name, worker_number
from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(worker_id, tmp_path_factory) -> Iterator[Stack]:
    """The whole service on its own database, with a private Redis: the stream process wakes
    long polls and streams by Redis pub/sub, which a database number does not keep apart from
    another stack's."""
    log_dir = tmp_path_factory.mktemp("sdk-stack")
    with running_stack(database_name("sdk", worker_number(worker_id)), log_dir) as stack:
        yield stack
