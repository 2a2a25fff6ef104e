"""Helpers of the admin tests: runs made and executed as a webhook's would be, and the messages a page shows."""

from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_create


def run_of(flow, payload=None, *, execute=True, trigger="webhook"):
    """A run of `flow` as its owner, executed unless `execute=False`, read back from the ledger."""
    run = flow_run_create(flow=flow, user=flow.user, trigger=trigger, payload={"name": "Ada"} if payload is None else payload)
    if execute:
        flow_run_execute(run_id=run.id)
    run.refresh_from_db()
    return run


def messages_of(response) -> list[str]:
    """The messages the admin shows on `response`'s page."""
    return [str(m) for m in response.context["messages"]] if response.context else []
