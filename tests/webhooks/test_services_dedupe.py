"""`dedupe_key` (issue 21, item 6): a JMESPath over the request that deduplicates like an Idempotency-Key."""

import pytest

from flows.models import FlowRun
from flows.services.flows import flow_update
from tests.helpers import post, provider_signed_headers
from webhooks.signatures import webhook_signing_secret_set


def test_a_payload_field_deduplicates_with_the_original_run(key_client, flow):
    flow_update(flow=flow, dedupe_key="payload.id")
    first = post(key_client, flow.endpoint_name, b'{"id": "evt_1", "n": 1}')
    again = post(key_client, flow.endpoint_name, b'{"id": "evt_1", "n": 2}')
    other = post(key_client, flow.endpoint_name, b'{"id": "evt_2"}')
    assert first.status_code == again.status_code == other.status_code == 202
    assert again.json()["run_id"] == first.json()["run_id"] and again["Idempotent-Replayed"] == "true"
    assert other.json()["run_id"] != first.json()["run_id"]
    assert FlowRun.objects.count() == 2


def test_a_header_or_query_value_deduplicates_and_absence_does_not(key_client, flow):
    flow_update(flow=flow, dedupe_key='headers."x-delivery" || query.delivery')
    a = post(key_client, flow.endpoint_name, HTTP_X_DELIVERY="d-1")
    b = post(key_client, f"{flow.endpoint_name}?delivery=d-1")
    assert a.json()["run_id"] == b.json()["run_id"]
    c = post(key_client, flow.endpoint_name)
    d = post(key_client, flow.endpoint_name)
    assert c.json()["run_id"] != d.json()["run_id"]  # no value: not deduplicated (as without a key)


def test_a_number_is_a_key_and_an_object_is_not(key_client, flow):
    flow_update(flow=flow, dedupe_key="payload.id")
    assert (
        post(key_client, flow.endpoint_name, b'{"id": 7}').json()["run_id"]
        == post(key_client, flow.endpoint_name, b'{"id": 7}').json()["run_id"]
    )
    x, y = post(key_client, flow.endpoint_name, b'{"id": {"a": 1}}'), post(key_client, flow.endpoint_name, b'{"id": {"a": 1}}')
    assert x.json()["run_id"] != y.json()["run_id"]


@pytest.mark.parametrize(
    ("provider", "secret", "extra", "headers", "body"),
    [
        ("github", "gh-secret", {}, {"HTTP_X_GITHUB_DELIVERY": "gh-1"}, b'{"a": 1}'),
        ("stripe", "whsec_abc", {}, {}, b'{"id": "evt_9", "type": "charge.succeeded"}'),
        ("slack", "slack-secret", {}, {}, b'{"event_id": "Ev1", "type": "event_callback"}'),
        ("shopify", "shpss_x", {}, {"HTTP_X_SHOPIFY_WEBHOOK_ID": "sh-1"}, b'{"a": 1}'),
    ],
)
def test_each_preset_dedupes_on_its_providers_delivery_id(client, flow, provider, secret, extra, headers, body):
    webhook_signing_secret_set(flow=flow, secret=secret)
    flow_update(flow=flow, verification={"provider": provider, **extra})
    signed = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in provider_signed_headers(provider, secret, body).items()}
    first = post(client, flow.endpoint_name, body, **signed, **headers)
    signed = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in provider_signed_headers(provider, secret, body).items()}
    again = post(client, flow.endpoint_name, body, **signed, **headers)
    assert first.status_code == again.status_code == 202, again.content
    assert again.json()["run_id"] == first.json()["run_id"] and again["Idempotent-Replayed"] == "true"


def test_an_explicit_dedupe_key_wins_over_the_presets(client, flow):
    webhook_signing_secret_set(flow=flow, secret="whsec_abc")
    flow_update(flow=flow, verification={"provider": "stripe"}, dedupe_key="payload.order")
    runs = set()
    for body in (b'{"id": "evt_1", "order": 5}', b'{"id": "evt_2", "order": 5}'):
        signed = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in provider_signed_headers("stripe", "whsec_abc", body).items()}
        runs.add(post(client, flow.endpoint_name, body, **signed).json()["run_id"])
    assert len(runs) == 1


@pytest.mark.parametrize("expression", ["payload.[", "", 5, "x" * 501])
def test_a_malformed_dedupe_key_is_422_naming_the_field(key_client, flow, expression):
    response = key_client.patch(f"/api/v1/flows/{flow.id}", {"dedupe_key": expression}, format="json")
    if expression == "":
        assert response.status_code == 200 and response.json()["dedupe_key"] is None
        return
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body", "dedupe_key"]


def test_dedupe_key_travels_in_the_export(key_client, flow):
    flow_update(flow=flow, dedupe_key="payload.id")
    exported = key_client.get(f"/api/v1/flows/{flow.id}/export").json()
    assert exported["dedupe_key"] == "payload.id"
    assert key_client.post("/api/v1/flows/upload/", exported, format="json").json()[0]["dedupe_key"] == "payload.id"
    bad = {**exported, "dedupe_key": "payload.["}
    response = key_client.post("/api/v1/flows/upload/", bad, format="json")
    assert response.status_code == 422 and "dedupe_key" in response.json()["detail"][0]["loc"]


def test_a_key_expression_that_grows_without_bound_gives_no_key_at_the_limit(key_client, flow, settings):
    # `[@, @][]` doubles a list: 40 steps would hold a web process for hours and take all its memory.
    settings.LANGRUN_MAX_OUTPUT_BYTES = 64 * 1024
    flow_update(flow=flow, dedupe_key="length(payload.a" + " | [@, @][]" * 40 + ")")
    a, b = post(key_client, flow.endpoint_name, b'{"a": [1]}'), post(key_client, flow.endpoint_name, b'{"a": [1]}')
    assert a.status_code == b.status_code == 202
    assert a.json()["run_id"] != b.json()["run_id"]  # no value: not deduplicated
