"""The README's code map names every module, so a newcomer can find any file's job there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAPPED = ("app", "workers", "config", "bench", "tests/support")


def named_in_code_map() -> set[str]:
    readme = (REPO / "README.md").read_text()
    start = readme.index("**Code map.**")
    block = readme[start : readme.index("\n```\n", readme.index("```text", start))]
    return set(re.findall(r"[\w/]+\.py", block))


def modules() -> set[str]:
    """Every module with something in it, migrations aside (their history explains them)."""
    return {
        str(path.relative_to(REPO))
        for folder in MAPPED
        for path in (REPO / folder).rglob("*.py")
        if "migrations" not in path.parts and path.stat().st_size > 0
    }


def test_the_readme_code_map_names_every_module():
    assert sorted(modules() - named_in_code_map()) == []


def test_the_readme_code_map_names_no_module_that_is_gone():
    assert sorted(named_in_code_map() - modules()) == []
