import pytest

from tests.helpers import AlertReceiver


@pytest.fixture
def receiver(local_allowed):
    with AlertReceiver() as r:
        yield r
