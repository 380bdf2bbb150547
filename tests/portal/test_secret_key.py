"""The session-signing key: the setting, or one made once, kept in Postgres and shared by every
process."""

from __future__ import annotations

from sqlalchemy import select

from app import create_app
from app.models import ServerSecret
from app.portal.secret_key import SESSION_KEY_NAME, stored_secret
from tests.portal.conftest import Portal


def test_without_a_setting_a_key_is_made_once_and_kept(db_session):
    first = stored_secret(db_session, SESSION_KEY_NAME)
    second = stored_secret(db_session, SESSION_KEY_NAME)

    assert first == second
    assert len(first) >= 32
    stored = db_session.scalars(select(ServerSecret).where(ServerSecret.name == SESSION_KEY_NAME))
    assert [row.value for row in stored] == [first]


def test_a_sign_in_on_one_web_process_is_honoured_by_another(settings, db_session, tenant):
    # Two apps stand for two gunicorn workers (or hosts): they share only the database.
    one = create_app(settings, session_factory=lambda: db_session)
    other = create_app(settings, session_factory=lambda: db_session)
    db_session.commit()
    browser = Portal(one.test_client())
    browser.sign_in(tenant.api_key)
    cookie = browser.client.get_cookie("boomerang_portal", path="/portal")
    assert cookie is not None

    second_worker = other.test_client()
    second_worker.set_cookie(cookie.key, cookie.value, path="/portal")
    response = second_worker.get("/portal/")

    assert response.status_code == 200
    assert "At a glance" in response.get_data(as_text=True)
    assert one.session_interface.signing_key() == other.session_interface.signing_key()


def test_a_configured_key_is_used_and_nothing_is_stored(settings, db_session, tenant):
    key = "k" * 40
    app = create_app(settings.replace(secret_key=key), session_factory=lambda: db_session)
    db_session.commit()

    Portal(app.test_client()).sign_in(tenant.api_key)

    assert app.session_interface.signing_key() == key
    assert db_session.scalar(select(ServerSecret.value)) is None


def test_a_cookie_signed_with_another_key_is_ignored(settings, db_session, tenant):
    signer = create_app(settings.replace(secret_key="a" * 40), session_factory=lambda: db_session)
    checker = create_app(settings.replace(secret_key="b" * 40), session_factory=lambda: db_session)
    db_session.commit()
    browser = Portal(signer.test_client())
    browser.sign_in(tenant.api_key)
    cookie = browser.client.get_cookie("boomerang_portal", path="/portal")

    forged = checker.test_client()
    forged.set_cookie(cookie.key, cookie.value, path="/portal")

    assert forged.get("/portal/").status_code == 303


def test_a_short_secret_key_setting_is_refused_naming_it():
    import pytest

    from config.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="BOOMERANG_SECRET_KEY"):
        Settings.from_env({"BOOMERANG_SECRET_KEY": "too-short"})
