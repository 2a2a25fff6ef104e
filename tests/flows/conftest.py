import pytest

from flows.services import queue
from flows.services.runs import flow_run_create


@pytest.fixture
def enqueued(monkeypatch):
    """The run ids the services ring the doorbell for (the broker itself is exercised by the e2e tests)."""
    calls = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda *, run_id: calls.append(str(run_id)) or True)
    return calls


@pytest.fixture
def queued_run(flow, user):
    """A queued run of the greeting flow, as a webhook records it."""
    return flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"}, body='{"name": "Ada"}')
