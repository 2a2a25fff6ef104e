"""flows.services.webhook_settings: a flow's webhook settings checked before they are stored."""

import pytest

from flows.exceptions import WebhookSettingInvalid
from flows.services.webhook_settings import webhook_dedupe_key_parse

# JMESPath's parser recurses once per level of nesting: within the 500 characters a setting may have, `!` nests deep
# enough to exhaust Python's stack.
TOO_DEEP = "!" * 499 + "a"


def test_an_expression_nested_too_deeply_is_refused_naming_its_field():
    with pytest.raises(WebhookSettingInvalid) as caught:
        webhook_dedupe_key_parse(TOO_DEEP, field="accept_if")
    assert caught.value.field == "accept_if" and caught.value.type == "jmespath" and "nested too deeply" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"accept_if": TOO_DEEP}, ["body", "accept_if"]),
        ({"dedupe_key": TOO_DEEP}, ["body", "dedupe_key"]),
        ({"concurrency": {"limit": 1, "key": TOO_DEEP}}, ["body", "concurrency", "key"]),
        ({"throttle": {"limit": 1, "period": 60, "key": TOO_DEEP}}, ["body", "throttle", "key"]),
    ],
)
def test_the_api_answers_a_located_422_for_it_and_keeps_the_flow(key_client, flow, fields, loc):
    response = key_client.patch(f"/api/v1/flows/{flow.id}", fields, format="json")
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(loc, "jmespath")]
    flow.refresh_from_db()
    assert (flow.accept_if, flow.dedupe_key, flow.concurrency_key, flow.throttle_key) == ("", "", "", "")
