import pytest

from flows.models import FlowRun
from flows.services.execution import flow_run_execute
from webhooks import services as webhook_services


@pytest.fixture
def runs_during_the_wait(monkeypatch):
    """The run is executed while the webhook waits, as a worker would (no worker runs in these tests); the list of
    the waits' timeouts."""
    waited = []

    def execute_now(*, run_id, timeout):
        waited.append(timeout)
        if FlowRun.objects.get(pk=run_id).status == "queued":
            flow_run_execute(run_id=run_id)
        return FlowRun.objects.get(pk=run_id)

    monkeypatch.setattr(webhook_services, "flow_run_wait", execute_now)
    return waited
