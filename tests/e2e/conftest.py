from __future__ import annotations

import pytest

from tests.conftest import make_settings, recreate_database, worker_number
from tests.e2e.stack import QUICK_ENV, Stack


@pytest.fixture(scope="module")
def stack(worker_id, tmp_path_factory):
    """The whole service, started from its real commands, on its own database and Redis db."""
    number = worker_number(worker_id)
    env = {
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/boomerang_e2e_{number}",
        "REDIS_URL": f"redis://127.0.0.1:6379/{8 + number}",
        **QUICK_ENV,
    }
    recreate_database(
        make_settings(
            f"boomerang_e2e_{number}",
            8 + number,
            **{k: v for k, v in env.items() if k.startswith("BOOMERANG_")},
        )
    )
    stack = Stack(env=env, log_dir=tmp_path_factory.mktemp("stack"))
    stack.env["BOOMERANG_PUBLIC_URL"] = stack.base_url
    stack.flush_redis()
    stack.start()
    yield stack
    stack.stop()
