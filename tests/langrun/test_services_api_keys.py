import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from langrun.models import ApiKey
from langrun.services import api_key_authenticate, api_key_create, api_key_usage_flush


def test_only_a_hash_is_stored(user):
    new = api_key_create(user=user, name="ci")
    assert new.key.startswith("sk-") and len(new.key) > 40
    row = ApiKey.objects.get(pk=new.api_key.pk)
    assert row.hashed_key == hashlib.sha256(new.key.encode()).hexdigest()
    assert new.key not in {getattr(row, f.attname) for f in ApiKey._meta.fields if isinstance(getattr(row, f.attname), str)}
    assert row.prefix == new.key[:11] and row.masked.startswith(row.prefix)


def test_authenticate_records_use(user, settings):
    settings.LANGRUN_API_KEY_USAGE_INTERVAL = 0
    new = api_key_create(user=user)
    assert api_key_authenticate(key=new.key).user == user
    api_key_authenticate(key=new.key)
    row = ApiKey.objects.get(pk=new.api_key.pk)
    assert row.use_count == 2 and row.last_used_at is not None


@pytest.fixture
def flush_key_uses():
    yield
    api_key_usage_flush()  # leave no counted use behind for the exit hook


def test_use_is_written_at_most_once_per_interval_and_nothing_is_lost(user, settings, flush_key_uses):
    settings.LANGRUN_API_KEY_USAGE_INTERVAL = 3600
    new = api_key_create(user=user)
    api_key_authenticate(key=new.key)  # the first use in a process is written at once
    row = ApiKey.objects.get(pk=new.api_key.pk)
    assert row.use_count == 1 and row.last_used_at is not None
    first_seen = row.last_used_at
    for _ in range(4):
        api_key_authenticate(key=new.key)
    row.refresh_from_db()
    assert (row.use_count, row.last_used_at) == (1, first_seen)  # counted in memory only
    assert api_key_usage_flush() >= 1
    row.refresh_from_db()
    assert row.use_count == 5 and row.last_used_at > first_seen
    assert api_key_usage_flush() == 0  # nothing pending twice


def test_counted_uses_are_added_to_the_next_write(user, settings, flush_key_uses):
    settings.LANGRUN_API_KEY_USAGE_INTERVAL = 3600
    new = api_key_create(user=user)
    for _ in range(3):
        api_key_authenticate(key=new.key)
    settings.LANGRUN_API_KEY_USAGE_INTERVAL = 0  # the interval has passed
    api_key_authenticate(key=new.key)
    assert ApiKey.objects.get(pk=new.api_key.pk).use_count == 4


@pytest.mark.parametrize("mutate", [lambda k: k + "x", lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), lambda k: "", lambda k: k[3:]])
def test_wrong_keys_fail(user, mutate):
    new = api_key_create(user=user)
    assert api_key_authenticate(key=mutate(new.key)) is None


def test_inactive_key_or_user_fails(user, make_user):
    new = api_key_create(user=user)
    ApiKey.objects.filter(pk=new.api_key.pk).update(is_active=False)
    assert api_key_authenticate(key=new.key) is None
    other = make_user(is_active=False)
    assert api_key_authenticate(key=api_key_create(user=other).key) is None


def test_create_api_key_command_prints_key_last(user):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "alice", "--name", "deploy", stdout=out, stderr=err)
    key = out.getvalue().strip().splitlines()[-1]
    assert api_key_authenticate(key=key).name == "deploy"
    assert key not in err.getvalue()


def test_create_api_key_command_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_key", "ghost")
