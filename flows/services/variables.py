"""Variables: per-user values a flow refers to, credentials encrypted (MultiFernet), and the context a run gets from them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404

from flows import engine
from flows.exceptions import VariableNameTaken, VariableUndecryptable, VariableValueRequired
from flows.models import VARIABLE_NAME_RE, FlowRun, Variable


def _fernet():
    """The credential keys: LANGRUN_VARIABLES_KEY's comma-separated list, the first encrypting and every one decrypting.

    The key derived from SECRET_KEY (the default when none is set) stays last as a decrypting key, so that
    setting LANGRUN_VARIABLES_KEY for the first time is a rotation like any other, not a loss.
    """
    import base64
    import hashlib

    from cryptography.fernet import Fernet, MultiFernet

    digest = hashlib.sha256(b"langrun-variables:" + settings.SECRET_KEY.encode()).digest()
    keys = [key.strip() for key in settings.LANGRUN_VARIABLES_KEY.split(",") if key.strip()]
    keys.append(base64.urlsafe_b64encode(digest).decode())
    return MultiFernet([Fernet(key) for key in dict.fromkeys(keys)])


def variable_encrypt(*, value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def variable_value(*, variable: Variable) -> str:
    """The plain value of a variable (decrypting a credential)."""
    if variable.kind != Variable.Kind.CREDENTIAL:
        return variable.value
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(variable.value.encode()).decode()
    except InvalidToken as exc:
        raise VariableUndecryptable(f"Variable {variable.name!r} cannot be decrypted with the current key; set its value again.") from exc


def variables_rotate_key() -> tuple[int, list[Variable]]:
    """Encrypt every credential again with the first key: the count re-encrypted, and those no key opens (left as they are).

    A value changed meanwhile (by its owner) is not overwritten: the update is conditional on the token read.
    """
    from cryptography.fernet import InvalidToken

    keys = _fernet()
    rotated, unreadable = 0, []
    for variable in Variable.objects.filter(kind=Variable.Kind.CREDENTIAL).order_by("pk").iterator(chunk_size=500):
        try:
            token = keys.rotate(variable.value.encode()).decode()
        except InvalidToken:
            unreadable.append(variable)
            continue
        rotated += Variable.objects.filter(pk=variable.pk, value=variable.value).update(value=token)
    return rotated, unreadable


def variable_create(*, user, name: str, value: str, kind: str = Variable.Kind.CREDENTIAL) -> Variable:
    variable = Variable(user=user, name=name, kind=kind)
    variable.value = variable_encrypt(value=value) if kind == Variable.Kind.CREDENTIAL else value
    return _variable_save(variable)


def variable_update(*, variable: Variable, name: str | None = None, value: str | None = None, kind: str | None = None) -> Variable:
    """Rename, re-kind or set the value. A generic variable made a credential without a new value keeps its value,
    encrypted; a credential made generic needs its new value, since a generic one is shown and a credential never is."""
    if value is None and kind is not None and kind != variable.kind:
        if variable.kind == Variable.Kind.CREDENTIAL:
            raise VariableValueRequired(variable.name)
        value = variable.value
    if name is not None:
        variable.name = name
    if kind is not None:
        variable.kind = kind
    if value is not None:
        variable.value = variable_encrypt(value=value) if variable.kind == Variable.Kind.CREDENTIAL else value
    with transaction.atomic():
        # A variable deleted since it was read stays deleted: a whole-row save inserted it again.
        if not Variable.objects.select_for_update().filter(pk=variable.pk).exists():
            raise Http404(f"Variable {variable.pk} not found.")
        return _variable_save(variable, update_fields=["user", "name", "kind", "value", "updated_at"])


def _variable_save(variable: Variable, update_fields: list[str] | None = None) -> Variable:
    if Variable.objects.filter(user=variable.user, name=variable.name).exclude(pk=variable.pk).exists():
        raise VariableNameTaken(variable.name)
    try:
        with transaction.atomic():
            variable.save(update_fields=update_fields)
    except IntegrityError as exc:
        raise VariableNameTaken(variable.name) from exc
    return variable


def variables_check_exist(*, user, data: Any, provided: frozenset[str] | set[str] = frozenset()) -> None:
    """Raise GraphValidationError naming every variable the flow refers to that `user` does not have
    (and that the request does not `provide`)."""
    refs = [(loc, name) for loc, name in engine.variable_references(data) if name not in provided]
    if not refs:
        return
    have = set(Variable.objects.filter(user=user, name__in={name for _, name in refs}).values_list("name", flat=True))
    _variables_raise_missing(refs=refs, have=have)


# --- Variables sent with a request: Langflow's X-LANGFLOW-GLOBAL-VAR-<NAME> headers ----------------------------

_HEADER_PREFIX = "HTTP_X_LANGFLOW_GLOBAL_VAR_"
_NAME = re.compile(VARIABLE_NAME_RE)


def variables_from_headers(*, meta: Mapping[str, Any]) -> dict[str, str]:
    """The variables a request sets for its run, from its `X-LANGFLOW-GLOBAL-VAR-<NAME>` headers (WSGI's META).

    Langflow upper-cases the name (`…-VAR-api-key` is `API_KEY`); WSGI already gives header names upper-cased
    with `-` as `_`. A name that is not a variable name is ignored. Servers drop header names that contain `_`
    (gunicorn, Django's own), so `…-VAR-OPENAI-API-KEY` is the spelling that reaches the run as `OPENAI_API_KEY`.
    """
    found = {}
    for key, value in meta.items():
        if key.startswith(_HEADER_PREFIX):
            name = key[len(_HEADER_PREFIX) :]
            if _NAME.match(name):
                found[name] = value
    return found


def request_variables_encrypt(*, values: Mapping[str, str] | None) -> str:
    """What a run records of its request's variables: a Fernet token of their JSON, or "" for none."""
    return variable_encrypt(value=json.dumps(dict(values))) if values else ""


def request_variables_of(*, run: FlowRun) -> dict[str, str]:
    """The variables a run's request set (decrypted); {} for none, or for a token no current key opens."""
    from cryptography.fernet import InvalidToken

    token = run.request_variables
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        return {}


def _variables_raise_missing(*, refs, have) -> None:
    """GraphValidationError naming every reference `(loc, name)` whose name is not in `have`."""
    missing = [
        engine.ValidationIssue(loc, f"Variable {name!r} does not exist; create it under /api/v1/variables/.", "variable_missing")
        for loc, name in refs
        if name not in have
    ]
    if missing:
        raise engine.GraphValidationError(missing)


def flow_run_context(*, user_id, payload: Any, refs, run: FlowRun | None = None) -> engine.RunContext:
    """What the engine needs for a run: the payload, the plain values of the variables the graph refers to (`refs`,
    `(loc, name)`; credentials also listed as secrets to mask) and the outbound HTTP allow-list. One query, and none
    without references; GraphValidationError when a referenced variable is missing or cannot be decrypted.

    The variables `run`'s request set override the owner's for this run (read, a query, only when the graph
    refers to variables at all). Each is masked in the run's record as a credential is, unless it stands in
    for a generic variable of the owner's (langrun's variables are credentials unless said otherwise).
    """
    values, secrets = {}, set()
    if refs:
        given = request_variables_of(run=run) if run is not None else {}
        found = {v.name: v for v in Variable.objects.filter(user=user_id, name__in={name for _, name in refs})}
        _variables_raise_missing(refs=refs, have=found.keys() | given.keys())
        for variable in found.values():
            if variable.name in given:
                continue
            try:
                values[variable.name] = variable_value(variable=variable)
            except VariableUndecryptable as exc:
                raise engine.GraphValidationError([engine.ValidationIssue(("variables", variable.name), str(exc), "variable_key")]) from exc
            if variable.kind == Variable.Kind.CREDENTIAL:
                secrets.add(values[variable.name])
        for name, value in given.items():
            values[name] = value
            if name not in found or found[name].kind == Variable.Kind.CREDENTIAL:
                secrets.add(value)
    return engine.RunContext(
        payload=payload,
        request=run.request if run is not None else None,
        variables=values,
        secrets=frozenset(s for s in secrets if s),
        http_allowed_hosts=tuple(settings.LANGRUN_HTTP_ALLOWED_HOSTS),
        max_output_bytes=settings.LANGRUN_MAX_OUTPUT_BYTES or None,
        max_run_output_bytes=settings.LANGRUN_MAX_RUN_OUTPUT_BYTES or None,
    )
