import pytest

from config.settings import Settings, SettingsError, markdown_table


def test_it_has_a_default_for_every_setting():
    settings = Settings.from_env({})
    assert settings.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/boomerang"
    assert settings.allow_private_networks is False


def test_it_reads_a_retry_schedule_in_seconds():
    settings = Settings.from_env({"BOOMERANG_RETRY_SCHEDULE": "1, 2,30"})
    assert settings.retry_schedule == (1, 2, 30)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOOMERANG_RETRY_SCHEDULE", "5,soon"),
        ("BOOMERANG_RETRY_SCHEDULE", "-1"),
        ("BOOMERANG_ALLOW_PRIVATE_NETWORKS", "maybe"),
        ("BOOMERANG_CONNECT_TIMEOUT_SECONDS", "0"),
        ("BOOMERANG_RETRY_JITTER", "1.5"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("REDIS_URL", "http://localhost"),
    ],
)
def test_it_refuses_a_malformed_value_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_it_refuses_an_unknown_boomerang_variable():
    with pytest.raises(SettingsError, match="BOOMERANG_RETRY_SCHEDUEL"):
        Settings.from_env({"BOOMERANG_RETRY_SCHEDUEL": "1"})


def test_it_refuses_a_lease_shorter_than_one_attempt():
    with pytest.raises(SettingsError, match="BOOMERANG_DELIVERY_LEASE_SECONDS"):
        Settings.from_env(
            {"BOOMERANG_DELIVERY_LEASE_SECONDS": "10", "BOOMERANG_TOTAL_TIMEOUT_SECONDS": "15"}
        )


def test_the_readme_configuration_table_is_the_one_the_declarations_make():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    # When this fails: python -m config.settings --markdown, and paste it over the README's table.
    assert markdown_table() in readme


def test_every_setting_is_declared_once_with_a_unit_and_help():
    from config.settings import declarations

    envs = [declared.env for _, declared in declarations()]
    assert len(envs) == len(set(envs))
    assert all(declared.unit and declared.help for _, declared in declarations())


def test_the_web_port_comes_from_port_when_boomerang_web_port_is_unset():
    assert Settings.from_env({"PORT": "5123"}).web_port == 5123
    assert Settings.from_env({"PORT": "5123", "BOOMERANG_WEB_PORT": "6000"}).web_port == 6000
    assert Settings.from_env({}).web_port == 8000


def test_a_bad_port_is_refused_naming_the_variable_it_came_from():
    with pytest.raises(SettingsError, match=r"^PORT="):
        Settings.from_env({"PORT": "eighty"})
