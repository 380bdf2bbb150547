"""A tampered paging cursor in the portal: a readable page or a 400, never a 500."""

from __future__ import annotations

import pytest

from tests.test_paging import ROW, TAMPERED, cursor_of


@pytest.mark.parametrize("page", ["/portal/jobs", "/portal/deliveries"])
def test_the_portal_answers_a_tampered_cursor_without_a_500(signed_in, page):
    assert signed_in.client.get(page, query_string={"cursor": TAMPERED}).status_code == 200
    too_far = cursor_of(f"0001-01-01T00:00:00+23:59|{ROW}")
    assert signed_in.client.get(page, query_string={"cursor": too_far}).status_code == 400
