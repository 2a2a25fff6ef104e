import pytest

from flows.services import queue
from flows.services.runs import flow_run_create


@pytest.fixture
def enqueued(monkeypatch):
    """The run ids the services ring the doorbell for (the broker itself is exercised by the e2e tests); `.options`
    holds what each was rung with (`quick`, `account`, …) by id."""
    calls = Rung()

    def ring(*, run_id, **options):
        calls.append(str(run_id))
        calls.options[str(run_id)] = options
        return True

    monkeypatch.setattr(queue, "flow_run_enqueue", ring)
    return calls


class Rung(list):
    def __init__(self):
        super().__init__()
        self.options = {}


@pytest.fixture
def queued_run(flow, user):
    """A queued run of the greeting flow, as a webhook records it."""
    return flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"}, body='{"name": "Ada"}')
