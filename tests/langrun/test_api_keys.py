import hashlib
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from langrun.models import ApiKey
from langrun.services import api_key_authenticate, api_key_create


def test_only_a_hash_is_stored(user):
    new = api_key_create(user=user, name="ci")
    assert new.key.startswith("sk-") and len(new.key) > 40
    row = ApiKey.objects.get(pk=new.api_key.pk)
    assert row.hashed_key == hashlib.sha256(new.key.encode()).hexdigest()
    assert new.key not in {getattr(row, f.attname) for f in ApiKey._meta.fields if isinstance(getattr(row, f.attname), str)}
    assert row.prefix == new.key[:11] and row.masked.startswith(row.prefix)


def test_authenticate_records_use(user):
    new = api_key_create(user=user)
    assert api_key_authenticate(key=new.key).user == user
    api_key_authenticate(key=new.key)
    row = ApiKey.objects.get(pk=new.api_key.pk)
    assert row.use_count == 2 and row.last_used_at is not None


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
