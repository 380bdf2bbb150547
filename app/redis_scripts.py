"""A Lua script run once per key set, all in one pipelined round trip.

redis-py's pipeline asks Redis ``SCRIPT EXISTS`` before every execute that holds a registered
script, so a claim that asks each lane's script in one pipeline paid two round trips, not one.
Here the calls go as plain ``EVALSHA``. Should Redis have lost its script cache (a restart, a
failover to a replica that never ran it), every call of the pipeline fails alike with NOSCRIPT,
having run nowhere; the script is then loaded and the pipeline sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

KeysAndArgs = tuple[Sequence[Any], Sequence[Any]]


def evaluate_each(client: redis.Redis, script: Script, calls: Sequence[KeysAndArgs]) -> list[Any]:
    """Run ``script`` once for each ``(keys, args)`` of ``calls``; the results, in order."""
    try:
        return _send(client, script, calls)
    except NoScriptError:
        client.script_load(script.script)
        return _send(client, script, calls)


def _send(client: redis.Redis, script: Script, calls: Sequence[KeysAndArgs]) -> list[Any]:
    pipeline = client.pipeline(transaction=False)
    for keys, args in calls:
        pipeline.evalsha(script.sha, len(keys), *keys, *args)
    return pipeline.execute()
