from __future__ import annotations

import pytest

from tests.support.settings import database_name, worker_number
from tests.support.stack import running_stack


@pytest.fixture(scope="module")
def stack(worker_id, tmp_path_factory):
    """The whole service, started from its real commands, on its own database and Redis db."""
    number = worker_number(worker_id)
    log_dir = tmp_path_factory.mktemp("stack")
    with running_stack(database_name("e2e", number), log_dir, redis_db=8 + number) as stack:
        yield stack
