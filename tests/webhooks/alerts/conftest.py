import pytest
from django_q.signing import SignedPackage

from flows.services import queue
from tests.helpers import AlertReceiver


@pytest.fixture
def alert_tasks(monkeypatch) -> list[dict]:
    """The tasks pushed to the broker (deliveries and runs), unpacked: a broker that records instead of sending."""
    pushed = []

    class Broker:
        list_key = "recording"

        def enqueue(self, package):
            pushed.append(SignedPackage.loads(package))
            return len(pushed)

    monkeypatch.setattr(queue, "_broker", Broker())
    return pushed


@pytest.fixture
def receiver(local_allowed):
    with AlertReceiver() as r:
        yield r
