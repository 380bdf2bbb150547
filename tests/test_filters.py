"""Content filters (CEL): what may be set, and how each event is decided."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.filters import FilterError, event_context, filter_problem, passes

EVENT = event_context(
    "invoice.paid",
    {"amount": 120.5, "currency": "EUR", "lines": [{"sku": "a"}], "result": {"status": "ok"}},
    ["eu"],
    datetime(2026, 12, 2, tzinfo=UTC),
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('data.amount > 100 && data.currency == "EUR"', True),
        ('data.amount > 100 && data.currency == "USD"', False),
        ('"eu" in channels', True),
        ('type.startsWith("invoice.")', True),
        ('data.lines.exists(l, l.sku == "a")', True),
        ("has(data.refund)", False),
        ('data.result.status == "ok"', True),
        ('timestamp >= "2026-12-01"', True),
    ],
)
def test_an_event_passes_or_not(expression, expected):
    assert filter_problem(expression) is None
    assert passes(expression, EVENT) is expected


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("data.amount >", "does not compile"),
        ("1 + 2", "must yield true or false"),
        ('"text"', "must yield true or false"),
        ("x" * 1001, "at most 1000 characters"),
        ("data.a.all(x, data.b.exists(y, x == y))", "at most 1 of all"),
    ],
)
def test_a_filter_that_cannot_work_is_refused_when_set(expression, problem):
    assert problem in (filter_problem(expression) or "")


def test_a_filter_that_cannot_decide_on_an_event_says_why():
    with pytest.raises(FilterError, match="missing"):
        passes("data.missing > 1", EVENT)
    with pytest.raises(FilterError, match="not true or false"):
        passes("data.amount", EVENT)
