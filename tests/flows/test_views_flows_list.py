"""The flow list: filters, search, pagination, and each flow's latest run, in a bounded number of queries."""

import pytest

from flows.models import Flow
from flows.services.execution import flow_run_execute
from flows.services.runs import flow_run_create


@pytest.fixture
def flows(make_flow, user):
    a = make_flow(user, name="Order notice", endpoint_name="orders")
    b = make_flow(user, name="Greeting", endpoint_name="greet")
    Flow.objects.filter(pk=b.pk).update(description="says hello to new orders")
    c = make_flow(user, name="Plain")
    return a, b, c


def names(client, query=""):
    response = client.get(f"/api/v1/flows/?{query}")
    assert response.status_code == 200, response.content
    return sorted(f["name"] for f in response.json()["results"])


def test_filters_and_search(key_client, flows):
    assert names(key_client, "name=order") == ["Order notice"]
    assert names(key_client, "endpoint_name=greet") == ["Greeting"]
    assert names(key_client, "endpoint_name=gree") == []
    assert names(key_client, "search=orders") == ["Greeting", "Order notice"]
    assert names(key_client, "search=PLAIN") == ["Plain"]
    ordered = key_client.get("/api/v1/flows/?ordering=name").json()["results"]
    assert [f["name"] for f in ordered] == ["Greeting", "Order notice", "Plain"]


def test_pagination(key_client, flows):
    page = key_client.get("/api/v1/flows/?limit=2&ordering=name").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"] and page["previous"] is None
    last = key_client.get("/api/v1/flows/?limit=2&offset=2&ordering=name").json()
    assert [f["name"] for f in last["results"]] == ["Plain"] and last["next"] is None


def test_latest_run_status_without_a_query_per_flow(key_client, flows, django_assert_max_num_queries):
    a, b, c = flows
    first = flow_run_create(flow=a, user=a.user, trigger="webhook", payload={"name": "x"})
    flow_run_execute(run_id=first.id)
    flow_run_create(flow=b, user=b.user, trigger="webhook", payload={"name": "x"})
    with django_assert_max_num_queries(5):  # key lookup, key use, count, the page's graph sizes, page
        results = key_client.get("/api/v1/flows/").json()["results"]
    by_name = {f["name"]: f for f in results}
    assert by_name["Order notice"]["latest_run_status"] == "succeeded"
    assert by_name["Greeting"]["latest_run_status"] == "queued" and by_name["Greeting"]["latest_run_at"]
    assert by_name["Plain"]["latest_run_status"] is None and by_name["Plain"]["latest_run_at"] is None
    one = key_client.get(f"/api/v1/flows/{a.id}").json()
    assert one["latest_run_status"] == "succeeded"
    assert one["webhook_url"] == "http://testserver/api/v1/webhook/orders" and one["webhook"] is True
    assert key_client.get(f"/api/v1/flows/{c.id}").json()["webhook_url"] == f"http://testserver/api/v1/webhook/{c.id}"


def test_other_users_flows_are_not_listed(key_client, make_flow, make_user):
    make_flow(make_user(), name="Theirs")
    assert key_client.get("/api/v1/flows/?search=Theirs").json()["count"] == 0


def test_query_with_nul_is_422(key_client, flows):
    response = key_client.get("/api/v1/flows/?name=a%00b")
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["query", "name"], "msg": "Cannot contain a NUL character.", "type": "string_nul"}]


def test_json_with_nul_or_lone_surrogate_is_422_not_500(key_client):
    for raw in ['{"name": "a\\u0000b", "data": {}}', '{"name": "\\ud800", "data": {}}']:
        response = key_client.post("/api/v1/flows/", raw, content_type="application/json")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body"]
    assert not Flow.objects.exists()


def test_too_deep_json_and_partless_multipart_are_422(key_client):
    deep = key_client.post("/api/v1/flows/", "[" * 100_000, content_type="application/json")
    assert deep.status_code == 422 and deep.json()["detail"][0]["loc"] == ["body"]
    junk = key_client.post("/api/v1/flows/", b"[]", content_type="multipart/form-data; boundary=xyz")
    assert junk.status_code == 422 and junk.json()["detail"][0]["loc"] == ["body"]
    assert not Flow.objects.exists()


def test_a_page_of_flows_ends_once_their_graphs_pass_the_cap(key_client, flows, settings):
    # Each graph may be up to LANGRUN_MAX_BODY_BYTES: ?limit=1000 read and rendered a thousand of them at once.
    import json

    sizes = sorted(len(json.dumps(f.data)) for f in flows)
    settings.LANGRUN_MAX_RUN_OUTPUT_BYTES = sizes[0] + sizes[1] - 1  # two graphs do not fit
    page = key_client.get("/api/v1/flows/?limit=3&ordering=name").json()
    assert page["count"] == 3 and [f["name"] for f in page["results"]] == ["Greeting"]
    assert "limit=3" in page["next"] and "offset=1" in page["next"]
    rest = key_client.get(page["next"]).json()
    assert [f["name"] for f in rest["results"]] == ["Order notice"]
