"""The flows app's domain errors: each carries the HTTP status and code the API answers it with
(langrun/exceptions.py renders every DomainError), and a message the admin shows as it is."""

from __future__ import annotations

from rest_framework import status

from langrun.exceptions import DomainError


class FlowsError(DomainError):
    """Base of the flows app's domain errors: a subclass sets `status` and `code`."""


class RunNotCancellable(FlowsError):
    """Only a run that is still `queued` can be cancelled."""

    status = status.HTTP_409_CONFLICT
    code = "run_not_cancellable"


class RunPayloadPruned(FlowsError):
    """Retention deleted this run's payload, so it cannot be replayed."""

    status = status.HTTP_409_CONFLICT
    code = "run_payload_pruned"


class RunNotReplayable(FlowsError):
    """The run's tweaks no longer fit its graph (a variable they name was deleted, a component changed): 422, located."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "run_not_replayable"


class EndpointNameTaken(FlowsError):
    """The owner already has a flow with this endpoint name: 422 on `endpoint_name`."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "endpoint_name_taken"

    def __init__(self, endpoint_name: str | None):
        self.endpoint_name = endpoint_name
        message = f"You already have a flow with endpoint name {endpoint_name}."
        super().__init__(message, errors=[{"loc": ["body", "endpoint_name"], "msg": message, "type": "unique"}])


class VariableNameTaken(FlowsError):
    """The owner already has a variable with this name: 422 on `name`."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "variable_name_taken"

    def __init__(self, name: str):
        self.name = name
        message = f"You already have a variable named {name}."
        super().__init__(message, errors=[{"loc": ["body", "name"], "msg": message, "type": "unique"}])


class VariableUndecryptable(FlowsError):
    """A credential's token does not open with the current key (LANGRUN_VARIABLES_KEY or SECRET_KEY changed): 422 on `value`."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "variable_undecryptable"

    def __init__(self, message: str):
        super().__init__(message, errors=[{"loc": ["body", "value"], "msg": message, "type": "variable_key"}])


class VariableValueRequired(FlowsError):
    """A credential made generic without a new value: its value would be shown, and a credential never is. 422 on `value`."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "variable_value_required"

    def __init__(self, name: str):
        message = f"Variable {name!r} is a credential, whose value is never shown; send the value it should have as a generic variable."
        super().__init__(message, errors=[{"loc": ["body", "value"], "msg": message, "type": "missing"}])


class WebhookSettingInvalid(FlowsError):
    """A flow's webhook setting (`methods`, …) is not one langrun understands: 422 naming the field."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "webhook_setting_invalid"

    def __init__(self, field: str, message: str, type_: str = "value_error"):
        self.field, self.type = field, type_
        # A setting inside an object ("concurrency.key") is located by its path.
        super().__init__(message, errors=[{"loc": ["body", *field.split(".")], "msg": message, "type": type_}])


class ScheduleLimitReached(FlowsError):
    """The account already has as many schedules as one account may (LANGRUN_MAX_SCHEDULES_PER_USER): 422."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "schedule_limit_reached"

    def __init__(self, limit: int):
        message = f"An account may have at most {limit} schedules; delete one to add another."
        super().__init__(message, errors=[{"loc": ["body"], "msg": message, "type": "value_error"}])


class ScheduleInvalid(FlowsError):
    """A schedule needs exactly one of a valid cron expression and an interval: 422, located."""

    status = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "schedule_invalid"

    def __init__(self, message: str, *, field: str | None = None):
        loc = ["body", field] if field else ["body"]
        super().__init__(message, errors=[{"loc": loc, "msg": message, "type": "value_error"}])
