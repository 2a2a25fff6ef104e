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


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        # `$` matches before a final line break: the name passed, then every answer of the flow was a 500.
        ({"response": {"mode": "static", "status": 200, "headers": {"X-Handled\n": "yes"}, "body": "ok"}}, ["body", "response"]),
        ({"verification": {"provider": "token", "header": "X-Token\n"}}, ["body", "verification"]),
    ],
)
def test_a_header_name_ending_in_a_line_break_is_refused(key_client, flow, fields, loc):
    assert key_client.post(f"/api/v1/flows/{flow.id}/signing-secret").status_code == 201
    response = key_client.patch(f"/api/v1/flows/{flow.id}", fields, format="json")
    assert response.status_code == 422
    assert [e["loc"][:2] for e in response.json()["detail"]] == [loc]
    flow.refresh_from_db()
    assert (flow.response, flow.verification) == ("", "")
