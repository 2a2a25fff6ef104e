"""Who calls a webhook and which flow they mean: the webhook's authentication and its flow lookup, scoped to the owner.

Each function raises an API exception carrying its status and Langflow's message.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from rest_framework import exceptions

from flows.models import ENDPOINT_NAME_RE, Flow, FlowVersion
from flows.services.versions import flow_version_current
from langrun.authentication import INVALID_API_KEY
from langrun.db import loaded_instance
from langrun.exceptions import Conflict
from langrun.models import ApiKey, User
from langrun.services import api_key_authenticate, api_key_digest, api_key_matches, api_key_prefix, api_key_record_use
from webhooks.tokens import ingest_token_authenticate, ingest_token_prefix

MISSING_API_KEY = "API key required when webhook authentication is enabled"
ACCESS_DENIED = "Access denied: You can only execute webhooks for flows you own"
ENDPOINT_NAME = re.compile(ENDPOINT_NAME_RE)


@dataclass(frozen=True)
class WebhookTarget:
    """Who calls and what runs: the API key's id and its user (None without authentication), or the ingest token's id
    (its caller is the flow's owner), the flow and the version a run executes.

    `only_if` is set when the process remembered the target instead of reading it now: the condition
    (SQL and its parameters) under which it still holds, which the run's INSERT checks.
    """

    api_key_id: uuid.UUID | None
    caller: User | None
    flow: Flow
    version: FlowVersion
    only_if: tuple[str, list] | None = None
    ingest_token_id: uuid.UUID | None = None

    @property
    def credential_id(self) -> uuid.UUID | None:
        """The API key or ingest token the request authenticated with (what the per-key rate limit counts)."""
        return self.api_key_id or self.ingest_token_id


def webhook_caller_and_flow(
    *,
    key: str | None,
    identifier: str,
    user_id: uuid.UUID | None,
    signed: bool,
    fresh: bool = False,
    signed_by: Callable[[Flow], bool] | None = None,
) -> WebhookTarget:
    """Who calls and which flow they mean, with the webhook's auth rules.

    With authentication on, a request needs an API key, or a signature on a flow
    that has a signing secret (checked later, on the body); without a valid key,
    every refusal is the same 403, whatever exists. The usual call (an
    active key of the flow's owner) costs one query for key, owner, flow and
    version together, or none when the process already knows them (then the
    target carries the condition the run's INSERT checks; `fresh` reads them
    again); anything else takes the step-by-step path, which finds the precise error. `signed_by(flow)` tells
    whether the request's signature holds for a flow: it picks, among flows several users gave the same endpoint
    name, the one a request without a key means.
    """
    auth = settings.LANGRUN_WEBHOOK_AUTH
    if auth and key and ingest_token_prefix(key) is not None:
        return webhook_target_of_ingest_token(token=key, identifier=identifier, user_id=user_id, refusal=INVALID_API_KEY)
    if auth and key and user_id is None:
        target = _webhook_target_of_key(key=key, identifier=identifier, fresh=fresh)
        if target is not None:
            return target
    api_key = webhook_api_key(key=key) if auth else None
    if auth and api_key is None:
        if not signed:
            raise exceptions.PermissionDenied(MISSING_API_KEY)
        flow = _webhook_flow_of_signed(identifier=identifier, user_id=user_id, signed_by=signed_by)
        return WebhookTarget(api_key_id=None, caller=None, flow=flow, version=flow_version_current(flow=flow))
    caller = api_key.user if api_key is not None else None
    flow = webhook_flow_lookup(identifier=identifier, caller=caller, user_id=user_id)
    api_key_id = api_key.pk if api_key is not None else None
    return WebhookTarget(api_key_id=api_key_id, caller=caller, flow=flow, version=flow_version_current(flow=flow))


def webhook_target_of_ingest_token(
    *, token: str, identifier: str | None = None, user_id: uuid.UUID | None = None, refusal: str = MISSING_API_KEY, fresh: bool = False
) -> WebhookTarget:
    """The flow an ingest token authorises, as the caller's target; the token's URL gives no `identifier`.

    A token that is unknown, revoked or expired, or names another flow than `identifier` (or another owner than
    `user_id`), is refused with `refusal`: as an invalid key in `x-api-key`, as a request without credentials in
    the token's URL. Nothing is remembered between requests (`fresh` is accepted for the webhook's retarget).
    """
    found = ingest_token_authenticate(token=token)
    flow = found.flow if found is not None else None
    if flow is None or (identifier is not None and not _identifies(identifier, flow)):
        raise exceptions.PermissionDenied(refusal)
    if user_id is not None and user_id != flow.user_id:
        raise exceptions.PermissionDenied(refusal)
    return WebhookTarget(api_key_id=None, caller=flow.user, flow=flow, version=flow_version_current(flow=flow), ingest_token_id=found.pk)


def _identifies(identifier: str, flow: Flow) -> bool:
    """Whether a webhook's identifier names `flow`: a UUID is an id, anything else an endpoint name (webhook_flow_lookup's rule)."""
    try:
        return uuid.UUID(identifier) == flow.pk
    except ValueError:
        return bool(flow.endpoint_name) and identifier == flow.endpoint_name


def _webhook_flow_of_signed(*, identifier: str, user_id: uuid.UUID | None, signed_by: Callable[[Flow], bool] | None) -> Flow:
    """The flow a signature without an API key may stand for: one with a signing secret (checked later, on the body).

    Anything else answers as a request without credentials: until the signature is verified, a caller
    must not learn whether a name exists, is shared, or belongs to a signed flow.
    """
    try:
        flow = webhook_flow_lookup(identifier=identifier, caller=None, user_id=user_id)
    except exceptions.NotFound:
        flow = None
    except Conflict:
        flow = _webhook_flow_signed_among_namesakes(name=identifier, signed_by=signed_by)
    if flow is None or not flow.signing_secret:
        raise exceptions.PermissionDenied(MISSING_API_KEY)
    return flow


# Flows with a signing secret looked at for a name several users share: bounded, since each is a signature check.
MAX_SIGNED_NAMESAKES = 20


def _webhook_flow_signed_among_namesakes(*, name: str, signed_by: Callable[[Flow], bool] | None) -> Flow | None:
    """Of the flows with a signing secret that several users named `name`, the one whose secret signed the request.

    A request without a key names no owner, and one user's naming must not break another's signed webhook: a
    namesake without a secret is not a candidate, and one with a secret of its own is not signed for.
    """
    if signed_by is None:
        return None
    namesakes = Flow.objects.select_related("user", "current_version").filter(endpoint_name=name).exclude(signing_secret="")
    signed = [flow for flow in namesakes.order_by("created_at", "id")[:MAX_SIGNED_NAMESAKES] if signed_by(flow)]
    return signed[0] if len(signed) == 1 else None


# The flow's fields the webhook reads, in the order of a target's row; the instances built from them defer the rest,
# so code that reads another field still gets it (with a query of its own). A remembered target holds while these,
# the flow's identifier and the key are as they were.
_FLOW_FIELDS = (
    "id", "user_id", "current_version_id", "signing_secret", "signing_secret_previous", "methods", "verification",
    "dedupe_key", "accept_if", "handshakes", "max_concurrent_runs", "concurrency_key", "throttle_limit", "throttle_key",
    "response",
)  # fmt: skip
_KEY = "user__api_keys__"


def _target_row(*, column: str, value, prefix: str) -> tuple | None:
    """Key, owner, flow and current version in one query: the flow's fields, its version's number, the key's id and hash."""
    flows = Flow.objects.filter(**{column: value, "user__is_active": True, f"{_KEY}prefix": prefix, f"{_KEY}is_active": True})
    rows = flows.order_by().values_list(*_FLOW_FIELDS, "current_version__number", f"{_KEY}id", f"{_KEY}hashed_key")[:1]
    return next(iter(rows), None)


def _target_holds(*, column: str, value, row: tuple) -> tuple[str, list]:
    """The SQL condition (and its parameters) under which a remembered target still holds, for the run's INSERT."""
    fields = dict(zip(_FLOW_FIELDS, row[: len(_FLOW_FIELDS)], strict=True))
    del fields["user_id"]
    fields.update({column: value, "user__is_active": True, f"{_KEY}id": row[-2], f"{_KEY}hashed_key": row[-1], f"{_KEY}is_active": True})
    holds = Flow.objects.filter(**fields)
    sql, params = holds.order_by().values("pk").query.sql_with_params()
    return f"EXISTS ({sql})", list(params)


class KnownTargets:
    """The targets this process has found, by the key's digest and the flow identifier: the row and its condition.

    A webhook whose key and flow the process already knows skips the lookup (a round trip and about a fifth
    of the webhook's CPU), and its INSERT checks the target's condition instead. When that no longer holds nothing
    is written, and the webhook reads the target again. At most `size`; the oldest go first. A process's
    threads share it, so every access holds the lock.
    """

    def __init__(self, *, size: int):
        self.size = size
        self._items: dict[tuple[str, str], tuple[tuple, tuple[str, list]]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[tuple, tuple[str, list]] | None:
        with self._lock:
            return self._items.get(key)

    def remember(self, key: tuple[str, str], value: tuple[tuple, tuple[str, list]]) -> None:
        with self._lock:
            self._items.pop(key, None)
            while self._items and len(self._items) >= self.size:
                del self._items[next(iter(self._items))]
            self._items[key] = value

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


_known_targets = KnownTargets(size=1024)


def _webhook_target_of_key(*, key: str, identifier: str, fresh: bool = False) -> WebhookTarget | None:
    """The target when `key` is an active key of an active user who owns the flow; None for anything else."""
    prefix = api_key_prefix(key)
    if prefix is None:
        return None
    digest = api_key_digest(key)
    if fresh:
        _known_targets.forget((digest, identifier))
    elif (known := _known_targets.get((digest, identifier))) is not None:
        row, only_if = known
        return _webhook_target_of_row(row, only_if=only_if)
    try:
        value, column = uuid.UUID(identifier), "id"
    except ValueError:
        if not ENDPOINT_NAME.fullmatch(identifier):
            return None
        value, column = identifier, "endpoint_name"
    row = _target_row(column=column, value=value, prefix=prefix)
    if row is None or not api_key_matches(hashed_key=row[-1], key=key):
        return None
    _known_targets.remember((digest, identifier), (row, _target_holds(column=column, value=value, row=row)))
    return _webhook_target_of_row(row, only_if=None)


def _webhook_target_of_row(row: tuple, *, only_if: tuple[str, list] | None) -> WebhookTarget:
    flow_id, user_id, version_id, secret, previous_secret, methods, verification, dedupe_key, accept_if, handshakes = row[:10]
    limit, concurrency_key, throttle_limit, throttle_key, response = row[10:15]
    version_number, api_key_id = row[15:17]
    as_uuid = Flow._meta.pk.to_python  # UUIDs as UUIDs on every database (SQLite returns their hex)
    flow = loaded_instance(
        Flow, id=as_uuid(flow_id), user_id=as_uuid(user_id), current_version_id=version_id,
        signing_secret=secret, signing_secret_previous=previous_secret, methods=methods, verification=verification,
        dedupe_key=dedupe_key, accept_if=accept_if, handshakes=handshakes, max_concurrent_runs=limit or None,
        concurrency_key=concurrency_key, throttle_limit=throttle_limit or None, throttle_key=throttle_key, response=response,
    )  # fmt: skip
    flow.user = loaded_instance(User, id=flow.user_id, is_active=True)
    version = loaded_instance(FlowVersion, id=version_id, flow_id=flow.pk, number=version_number)
    flow.current_version = version
    api_key_id = as_uuid(api_key_id)
    if only_if is None:  # read now: the key is active. A remembered one is counted once its INSERT accepted it.
        api_key_record_use(api_key_id=api_key_id)
    return WebhookTarget(api_key_id=api_key_id, caller=flow.user, flow=flow, version=version, only_if=only_if)


def webhook_flow_lookup(*, identifier: str, caller: User | None, user_id: uuid.UUID | None) -> Flow:
    """The flow named by a UUID (its id) or anything else (its endpoint name), scoped to the caller.

    With authentication on, only the caller's flows are candidates. With it off,
    `user_id` picks the owner when several users share an endpoint name.
    """
    not_found = exceptions.NotFound(f"Flow identifier {identifier} not found")
    if caller is not None and user_id is not None and user_id != caller.pk:
        raise exceptions.PermissionDenied(ACCESS_DENIED)
    try:
        flow_id = uuid.UUID(identifier)
    except ValueError:
        flow_id = None
    # No default ordering (at most two rows are wanted); the owner is loaded only when the caller is unknown.
    joined = ("current_version",) if caller is not None else ("user", "current_version")
    flows = Flow.objects.select_related(*joined).order_by()
    if flow_id is not None:
        flow = flows.filter(pk=flow_id).first()
        if flow is None or (user_id is not None and flow.user_id != user_id):
            raise not_found
        if caller is not None and flow.user_id != caller.pk:
            raise exceptions.PermissionDenied(ACCESS_DENIED)
        return flow
    if not ENDPOINT_NAME.fullmatch(identifier):  # no flow has such a name; and NUL cannot even be queried on PostgreSQL
        raise not_found
    owner = caller.pk if caller is not None else user_id
    candidates = list(flows.filter(endpoint_name=identifier, **({"user_id": owner} if owner else {}))[:2])
    if not candidates:
        raise not_found
    if len(candidates) > 1:
        raise Conflict(f"Several users have a flow with endpoint name {identifier}; add ?user_id=<owner's id> to choose one.")
    return candidates[0]


def webhook_api_key(*, key: str | None) -> ApiKey | None:
    """The active API key a request carries; PermissionDenied for a key that is not one. None when there is no key."""
    if not key:
        return None
    api_key = api_key_authenticate(key=key)
    if api_key is None:
        raise exceptions.PermissionDenied(INVALID_API_KEY)
    return api_key
