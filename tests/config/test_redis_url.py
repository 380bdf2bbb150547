import pytest

from config.redis_url import SentinelTarget, parse_redis_url, parse_sentinel_url
from config.settings import Settings, SettingsError


def test_it_reads_every_sentinel_the_primary_name_and_the_database():
    target = parse_sentinel_url(
        "sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/2?master=main"
    )
    assert target == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
        master_name="main",
        db=2,
    )


def test_it_takes_the_default_port_and_database_when_none_is_given():
    target = parse_sentinel_url("sentinel://sentinel-a,sentinel-b?master=mymaster")
    assert target.sentinels == (("sentinel-a", 26379), ("sentinel-b", 26379))
    assert target.db == 0


def test_it_reads_a_percent_encoded_user_and_password():
    target = parse_sentinel_url("sentinel://app:p%40ss%3Aword@h1:26379/0?master=m")
    assert (target.username, target.password) == ("app", "p@ss:word")
    assert parse_sentinel_url("sentinel://:secret@h1?master=m").username is None


def test_it_still_takes_a_plain_redis_url():
    assert parse_redis_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert parse_redis_url("rediss://cache.example:6380/1") == "rediss://cache.example:6380/1"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sentinel://h1:26379,h2:26379/0", "master=NAME"),
        ("sentinel://h1:26379/0?master=", "master=NAME"),
        ("sentinel://h1:26379/0?master=a&master=b", "master=NAME"),
        ("sentinel://h1:26379/0?master=m&timeout=3", "unknown option 'timeout'"),
        ("sentinel:///0?master=m", "at least one sentinel host"),
        ("sentinel://h1:26379,,h2/0?master=m", "at least one sentinel host"),
        ("sentinel://h1:port/0?master=m", "no valid port"),
        ("sentinel://h1:70000/0?master=m", "no valid port"),
        ("sentinel://[::1/0?master=m", "Invalid IPv6 URL"),
        ("sentinel://[::1]x/0?master=m", "not \\[address\\]:port"),
        ("sentinel://h1/zero?master=m", "must be a number"),
        ("sentinel://justauser@h1?master=m", "password goes after a colon"),
    ],
)
def test_it_refuses_a_malformed_sentinel_url_saying_what_is_wrong(url, says):
    with pytest.raises(ValueError, match=says):
        parse_sentinel_url(url)


@pytest.mark.parametrize(
    "url", ["http://localhost", "sentinels://h1?master=m", "redis+sentinel://h1/m"]
)
def test_it_refuses_other_schemes_naming_the_forms_it_takes(url):
    with pytest.raises(ValueError, match="redis:// or rediss:// URL, or sentinel://"):
        parse_redis_url(url)


def test_a_bad_sentinel_url_stops_the_boot_naming_redis_url_and_hiding_the_password():
    with pytest.raises(SettingsError, match="REDIS_URL") as refused:
        Settings.from_env({"REDIS_URL": "sentinel://:hunter2@h1:26379,h2:26379/0"})
    assert "hunter2" not in str(refused.value)
    assert "master=NAME" in str(refused.value)


def test_settings_take_a_sentinel_url_as_written():
    url = "sentinel://h1:26379,h2:26379/0?master=mymaster"
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
