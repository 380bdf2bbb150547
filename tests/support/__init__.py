"""Support code the tests and the benchmark share: settings and scratch databases, processes in
their own groups, a private redis-server, and the real stack.

Nothing here imports a test module, so ``bench/`` may import it.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The virtualenv's scripts: gunicorn, celery and boomerang as installed beside this Python.
BIN = Path(sys.executable).parent
