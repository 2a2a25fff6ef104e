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
