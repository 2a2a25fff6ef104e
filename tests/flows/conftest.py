import pytest

from flows import services


@pytest.fixture(params=["returning", "general"])
def execute_path(request, monkeypatch):
    """Runs a test once per way the worker claims and finishes a run.

    `returning`: the one-statement claim and finish (PostgreSQL only); `general`: the ORM
    transactions every database has, which PostgreSQL also uses for concurrency-limited flows.
    """
    if request.param == "returning":
        if not services._returning_sql():
            pytest.skip("the one-statement claim and finish need PostgreSQL")
    else:
        monkeypatch.setattr(services, "_returning_sql", lambda: False)
    return request.param
