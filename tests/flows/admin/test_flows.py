"""flows.admin.flows: the flow list and page, saving and importing through the services, Run now, permissions and owner scoping."""

import json
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.models.signals import pre_save
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from flows.exceptions import EndpointNameTaken
from flows.models import Flow, FlowRun
from flows.services.flows import flow_create
from flows.services.schedules import flow_schedule_create
from flows.services.variables import variable_create
from tests.flows.admin.helpers import messages_of, run_of
from tests.helpers import BROKEN_FLOW, GREETING_FLOW, grant, login

# --- flows list --------------------------------------------------------------


def test_flow_list_shows_webhook_url_run_count_and_last_status(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    run_of(flow)
    run_of(flow, payload={"nobody": 1})  # the template misses {name}: failed, and the latest
    response = login(staff).get(reverse("admin:flows_flow_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "http://testserver/api/v1/webhook/greet" in html
    row = re.search(r"<tr>.*?Greeting.*?</tr>", html, re.S).group(0)
    assert f'?flow={flow.pk}">2</a>' in row
    assert "lr-badge-failed" in row


def test_flow_list_has_no_per_row_queries(staff, make_flow):
    def count_queries():
        c = login(staff)
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(reverse("admin:flows_flow_changelist")).status_code == 200
        return len(ctx)

    run_of(make_flow(staff, name="first"))
    one = count_queries()
    for i in range(5):
        run_of(make_flow(staff, name=f"more {i}"))
    assert count_queries() == one


def test_flow_list_search_and_last_status_filter(staff, make_flow):
    ok = make_flow(staff, name="Works", endpoint_name="works")
    broken = make_flow(staff, name="Breaks", endpoint_name="breaks")
    make_flow(staff, name="Idle", endpoint_name="idle")
    run_of(ok)
    run_of(broken, payload={"x": 1})
    c = login(staff)
    url = reverse("admin:flows_flow_changelist")

    def names(query):
        response = c.get(url, query)
        assert response.status_code == 200
        return sorted(f.name for f in response.context["cl"].result_list)

    assert names({"q": "break"}) == ["Breaks"]
    assert names({"q": "works"}) == ["Works"]
    assert names({"last_status": "failed"}) == ["Breaks"]
    assert names({"last_status": "succeeded"}) == ["Works"]
    assert names({"last_status": "never"}) == ["Idle"]


def test_staff_see_only_their_flows_and_no_owner_filter(staff, other, superuser, make_flow):
    make_flow(staff, name="Mine")
    make_flow(other, name="Theirs")
    response = login(staff).get(reverse("admin:flows_flow_changelist"))
    assert [f.name for f in response.context["cl"].result_list] == ["Mine"]
    assert [type(f).__name__ for f in response.context["cl"].filter_specs] == ["LastStatusFilter"]

    response = login(superuser).get(reverse("admin:flows_flow_changelist"))
    assert sorted(f.name for f in response.context["cl"].result_list) == ["Mine", "Theirs"]
    assert "RelatedFieldListFilter" in [type(f).__name__ for f in response.context["cl"].filter_specs]


def test_staff_filtering_by_owner_cannot_reach_other_flows(staff, other, make_flow):
    make_flow(other, name="Theirs")
    response = login(staff).get(reverse("admin:flows_flow_changelist"), {"user__id__exact": str(other.pk)})
    # Django accepts the lookup, but it narrows the user's own flows: it never widens the scope.
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


# --- flow change page -------------------------------------------------------


def test_flow_page_shows_diagram_webhook_curl_and_latest_runs(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    run = run_of(flow)
    response = login(staff).get(reverse("admin:flows_flow_change", args=[flow.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    svg = re.search(r"<svg class=\"lr-diagram\".*?</svg>", html, re.S).group(0)
    for node_id, type_name in [("hook", "Webhook"), ("greet", "Template"), ("out", "Output")]:
        assert f'data-node-id="{node_id}"' in svg
        assert f">{type_name}</text>" in svg
    assert svg.count('class="lr-edge"') == 2
    assert 'value="http://testserver/api/v1/webhook/greet"' in html
    assert 'data-lr-copy="lr-webhook-url"' in html
    assert "curl -X POST &#x27;http://testserver/api/v1/webhook/greet&#x27;" in html
    assert "x-api-key: &lt;YOUR_API_KEY&gt;" in html
    assert reverse("admin:flows_flowrun_change", args=[run.pk]) in html
    assert "lr-badge-succeeded" in html
    assert reverse("admin:flows_flow_run", args=[flow.pk]) in html  # the "Run now" button
    assert "flows/admin.css" in html and "flows/admin.js" in html
    assert "cdn" not in html.lower()


def test_flow_page_of_flow_without_endpoint_name_uses_its_id(staff, make_flow):
    flow = make_flow(staff)
    html = login(staff).get(reverse("admin:flows_flow_change", args=[flow.pk])).content.decode()
    assert f"http://testserver/api/v1/webhook/{flow.pk}" in html


def test_flow_page_with_invalid_stored_graph_explains_instead_of_failing(staff, make_flow):
    flow = make_flow(staff)
    Flow.objects.filter(pk=flow.pk).update(data={"nodes": [{"id": "x", "type": "Nope"}]})
    response = login(staff).get(reverse("admin:flows_flow_change", args=[flow.pk]))
    assert response.status_code == 200
    assert "The saved graph is invalid" in response.content.decode()


@pytest.mark.parametrize("name", ["change", "delete", "history", "run"])
def test_other_users_flow_pages_are_404(staff, other, make_flow, name):
    flow = make_flow(other)
    url = reverse(f"admin:flows_flow_{name}", args=[flow.pk])
    assert login(staff).get(url).status_code == 404
    assert login(staff).post(url, {"payload": "{}", "post": "yes"}).status_code == 404
    assert Flow.objects.filter(pk=flow.pk).exists()
    assert not FlowRun.objects.exists()


def test_unknown_flow_id_is_404(staff):
    assert login(staff).get(reverse("admin:flows_flow_change", args=["not-a-uuid"])).status_code == 404


def test_superuser_sees_any_flow(superuser, other, make_flow):
    flow = make_flow(other)
    assert login(superuser).get(reverse("admin:flows_flow_change", args=[flow.pk])).status_code == 200


def test_non_staff_cannot_use_the_admin(make_user, make_flow):
    plain = make_user("plain")
    flow = make_flow(plain)
    response = login(plain).get(reverse("admin:flows_flow_change", args=[flow.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- saving flows through the services ----------------------------------------


def flow_form(**fields):
    return {"name": "Pasted", "endpoint_name": "pasted", "description": "", "data": json.dumps(GREETING_FLOW), **fields}


def test_staff_creates_flow_by_pasting_json_and_owns_it(staff, other):
    response = login(staff).post(reverse("admin:flows_flow_add"), flow_form(user=str(other.pk)))
    assert response.status_code == 302, response.content.decode()[:2000]
    flow = Flow.objects.get(name="Pasted")
    assert flow.user == staff  # a posted owner is ignored: staff have no owner field
    assert flow.data == GREETING_FLOW
    assert response["Location"] == reverse("admin:flows_flow_changelist")


def test_superuser_creates_flow_for_another_user(superuser, other):
    response = login(superuser).post(reverse("admin:flows_flow_add"), flow_form(user=str(other.pk)))
    assert response.status_code == 302
    assert Flow.objects.get(name="Pasted").user == other


def test_staff_form_has_no_owner_field(staff, superuser):
    assert "user" not in login(staff).get(reverse("admin:flows_flow_add")).context["adminform"].form.fields
    assert "user" in login(superuser).get(reverse("admin:flows_flow_add")).context["adminform"].form.fields


def test_invalid_graph_errors_name_the_node_next_to_the_field(staff):
    response = login(staff).post(reverse("admin:flows_flow_add"), flow_form(data=json.dumps(BROKEN_FLOW)))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["data"]
    assert any(e.startswith("Node 'greet', params.template: Template.template must be of type str") for e in errors), errors
    assert any(e.startswith("Node 'out', type: Unknown component type 'Nope'") for e in errors), errors
    html = response.content.decode()
    assert "Node &#x27;greet&#x27;, params.template" in html
    assert not Flow.objects.exists()


def test_json_syntax_error_is_a_field_error(staff):
    response = login(staff).post(reverse("admin:flows_flow_add"), flow_form(data='{"nodes": ['))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["data"] == ["Enter a valid JSON."]
    assert not Flow.objects.exists()


def test_endpoint_name_taken_is_a_field_error(staff, other, make_flow):
    make_flow(staff, endpoint_name="pasted")
    make_flow(other, endpoint_name="free-for-staff")
    c = login(staff)
    response = c.post(reverse("admin:flows_flow_add"), flow_form())
    assert response.status_code == 200
    assert "already have a flow with the endpoint name" in response.context["adminform"].form.errors["endpoint_name"][0]
    # Another user's name does not count.
    assert c.post(reverse("admin:flows_flow_add"), flow_form(name="Ok", endpoint_name="free-for-staff")).status_code == 302


def test_superuser_endpoint_name_clash_checked_for_the_chosen_owner(superuser, other, make_flow):
    make_flow(other, endpoint_name="pasted")
    c = login(superuser)
    response = c.post(reverse("admin:flows_flow_add"), flow_form(user=str(other.pk)))
    assert "endpoint_name" in response.context["adminform"].form.errors
    assert c.post(reverse("admin:flows_flow_add"), flow_form(user=str(superuser.pk))).status_code == 302


def test_editing_a_flow_validates_and_saves_through_the_service(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    c = login(staff)
    url = reverse("admin:flows_flow_change", args=[flow.pk])
    form = c.get(url).context["adminform"].form
    assert json.loads(form["data"].value()) == GREETING_FLOW
    assert "\n  " in form["data"].value()  # pretty-printed in the editor

    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", data=json.dumps(BROKEN_FLOW)))
    assert response.status_code == 200
    flow.refresh_from_db()
    assert flow.data == GREETING_FLOW

    changed = {
        **GREETING_FLOW,
        "nodes": [
            *GREETING_FLOW["nodes"][:1],
            {"id": "greet", "type": "Template", "params": {"template": "Hi {name}"}},
            GREETING_FLOW["nodes"][2],
        ],
    }
    response = c.post(url, flow_form(name="Renamed", endpoint_name="", data=json.dumps(changed)))
    assert response.status_code == 302
    flow.refresh_from_db()
    assert (flow.name, flow.endpoint_name, flow.data) == ("Renamed", None, changed)


def test_run_control_is_set_in_the_admin_and_a_bad_key_is_a_field_error(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    c = login(staff)
    url = reverse("admin:flows_flow_change", args=[flow.pk])
    page = c.get(url)
    assert b"Run control" in page.content and b"concurrency_key" in page.content
    fields = {"max_concurrent_runs": "1", "concurrency_key": "payload.[", "throttle_limit": "", "throttle_period": "", "throttle_key": ""}
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", **fields))
    assert response.status_code == 200
    assert "concurrency_key" in response.context["adminform"].form.errors
    fields.update(concurrency_key="payload.customer", throttle_limit="5")  # a throttle without its period
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", **fields))
    assert "throttle_period" in response.context["adminform"].form.errors
    fields.update(throttle_period="60", throttle_key='headers."x-tenant"')
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", **fields))
    assert response.status_code == 302, response.context["adminform"].form.errors
    flow.refresh_from_db()
    assert flow.concurrency == {"limit": 1, "key": "payload.customer"}
    assert flow.throttle == {"limit": 5, "period": 60, "key": 'headers."x-tenant"'}


def test_a_waiting_runs_page_says_what_it_waits_for(staff, make_flow, enqueued):
    flow = make_flow(staff, endpoint_name="greet")
    Flow.objects.filter(pk=flow.pk).update(max_concurrent_runs=1, concurrency_key="payload.name")
    flow.refresh_from_db()
    first, second = run_of(flow, execute=False), run_of(flow, execute=False)
    FlowRun.objects.filter(pk=first.pk).update(status="running")
    page = login(staff).get(reverse("admin:flows_flowrun_change", args=[second.pk])).content.decode()
    assert "concurrency (key: Ada, limit: 1, running: 1)" in page


# --- run now ----------------------------------------------------------------------


def test_run_now_form_prefills_last_payload(staff, make_flow):
    flow = make_flow(staff)
    c = login(staff)
    response = c.get(reverse("admin:flows_flow_run", args=[flow.pk]))
    assert response.status_code == 200
    assert json.loads(response.context["form"]["payload"].value()) == {}
    run_of(flow, payload={"name": "Grace"}, execute=False)
    response = c.get(reverse("admin:flows_flow_run", args=[flow.pk]))
    assert json.loads(response.context["form"]["payload"].value()) == {"name": "Grace"}


def test_run_now_creates_an_admin_run_and_links_to_it(staff, make_flow, django_capture_on_commit_callbacks):
    flow = make_flow(staff)
    with django_capture_on_commit_callbacks() as callbacks:
        response = login(staff).post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": '{"name": "Ada"}'}, follow=True)
    assert len(callbacks) == 1  # enqueued after commit, like a webhook run
    run = FlowRun.objects.get()
    assert (run.flow, run.user, run.trigger, run.status, run.payload) == (flow, staff, "admin", "queued", {"name": "Ada"})
    assert run.body == '{"name": "Ada"}'
    assert response.redirect_chain[-1][0] == reverse("admin:flows_flow_change", args=[flow.pk])
    assert any(reverse("admin:flows_flowrun_change", args=[run.pk]) in m for m in messages_of(response))


def test_superuser_run_now_runs_as_the_flow_owner(superuser, other, make_flow):
    flow = make_flow(other)
    login(superuser).post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": "[1, 2]"})
    run = FlowRun.objects.get()
    assert (run.user, run.payload) == (other, [1, 2])


@pytest.mark.parametrize("payload", ["", "{nope", "   "])
def test_run_now_with_bad_json_shows_error_and_creates_nothing(staff, make_flow, payload):
    flow = make_flow(staff)
    response = login(staff).post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": payload})
    assert response.status_code == 200
    assert response.context["form"].errors["payload"]
    assert not FlowRun.objects.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        ('{"name": NaN}', "finite"),
        ('{"name": Infinity}', "finite"),
        ('{"name": 1e999}', "finite"),
        ('{"name": "\\u0000"}', "\\u0000"),
        ('{"name": "\\ud800"}', "surrogate"),
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        ("[" * 150 + "]" * 150, "nested too deeply"),
        ('{"n": ' + "9" * 5000 + "}", "digits"),
    ],
)
def test_run_now_with_json_no_database_can_store_shows_error_and_creates_nothing(staff, make_flow, payload, message):
    # Django's JSONField takes NaN and Infinity, and lets RecursionError and the int digit limit's ValueError through:
    # each was a 500 (SQLite's JSON_VALID check, or the parser), where the API answers a 422.
    flow = make_flow(staff)
    response = login(staff).post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": payload})
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["payload"])
    assert not FlowRun.objects.exists()


def test_run_now_accepts_empty_object_and_null(staff, make_flow):
    flow = make_flow(staff)
    c = login(staff)
    assert c.post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": "{}"}).status_code == 302
    assert c.post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": "null"}).status_code == 302
    assert sorted(map(json.dumps, FlowRun.objects.values_list("payload", flat=True))) == ["null", "{}"]


# --- runs list ------------------------------------------------------------------


# --- run detail -----------------------------------------------------------------


# --- run actions and buttons ------------------------------------------------------


# --- the diagram and error wording -------------------------------------------------


@pytest.mark.parametrize("model", ["flow", "flowrun"])
def test_filter_counts_can_be_shown(staff, make_flow, model):
    run_of(make_flow(staff))
    response = login(staff).get(reverse(f"admin:flows_{model}_changelist"), {"_facets": "True"})
    assert response.status_code == 200
    assert "Succeeded (1)" in response.content.decode()


def test_deleting_a_flow_summarises_its_runs_and_deletes_them(staff, make_flow):
    flow = make_flow(staff)
    for _ in range(3):
        run_of(flow)
    c = login(staff)
    url = reverse("admin:flows_flow_delete", args=[flow.pk])
    response = c.get(url)
    assert response.status_code == 200
    assert dict(response.context["model_count"]) == {"flows": 1, "flow runs": 3, "node results": 9}
    assert c.post(url, {"post": "yes"}).status_code == 302
    assert not Flow.objects.exists() and not FlowRun.objects.exists()


def test_delete_selected_flows_action_is_scoped(staff, other, make_flow):
    mine, theirs = make_flow(staff, name="Mine"), make_flow(other, name="Theirs")
    login(staff).post(
        reverse("admin:flows_flow_changelist"),
        {"action": "delete_selected", "_selected_action": [str(mine.pk), str(theirs.pk)], "post": "yes"},
    )
    assert list(Flow.objects.values_list("name", flat=True)) == ["Theirs"]


def test_superuser_add_form_defaults_the_owner_to_themselves(superuser):
    form = login(superuser).get(reverse("admin:flows_flow_add")).context["adminform"].form
    assert str(form["user"].value()) == str(superuser.pk)


# --- variables (write-only values, owner-scoped) ---------------------------------------------


# --- importing a Langflow export --------------------------------------------------------------

FIXTURES = Path(__file__).parents[1] / "fixtures"


def upload(name: str, content: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, (FIXTURES / name).read_bytes() if content is None else content, "application/json")


@pytest.mark.parametrize("content", [b"[" * 5000 + b"]" * 5000, b'{"name": "x\\ud800", "data": {"nodes": [], "edges": []}}'])
def test_importing_a_file_no_database_can_store_is_a_form_error(staff, content):
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("f.json", content)})
    assert response.status_code == 200 and response.context["form"].errors["file"]
    assert not Flow.objects.exists()


def test_flow_list_links_to_the_import_page(staff):
    html = login(staff).get(reverse("admin:flows_flow_changelist")).content.decode()
    assert f'href="{reverse("admin:flows_flow_import")}"' in html and "Import Langflow flow" in html


def test_import_page_form(staff, superuser):
    page = login(staff).get(reverse("admin:flows_flow_import"))
    assert page.status_code == 200 and list(page.context["form"].fields) == ["file"]
    assert 'enctype="multipart/form-data"' in page.content.decode()
    form = login(superuser).get(reverse("admin:flows_flow_import")).context["form"]
    assert list(form.fields) == ["file", "user"] and form["user"].value() == superuser.pk


def test_import_creates_the_flow_and_opens_it(staff):
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json")}, follow=True)
    flow = Flow.objects.get()
    assert (flow.user, flow.name, flow.endpoint_name) == (staff, "Order notice", "order-notice")
    assert [n["id"] for n in flow.data["nodes"]] == ["Webhook-ab12c", "ParserComponent-x9y8z", "ChatOutput-q1w2e"]
    assert response.redirect_chain[-1][0] == reverse("admin:flows_flow_change", args=[flow.pk])
    assert any("Imported 1 flow(s)" in m and "endpoint order-notice" in m for m in messages_of(response))
    html = response.content.decode()
    assert 'data-node-id="ParserComponent-x9y8z"' in html  # the diagram of the imported graph
    # The same file again: a free endpoint name, as Langflow does.
    login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json")})
    assert sorted(Flow.objects.values_list("endpoint_name", flat=True)) == ["order-notice", "order-notice-1"]


def test_import_of_several_flows_goes_to_the_list(staff):
    flows = [json.loads((FIXTURES / name).read_text()) for name in ("webhook_parser_chat_output.json", "if_else_branches.json")]
    content = json.dumps({"flows": flows}).encode()
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("two.json", content)})
    assert response.status_code == 302 and response["Location"] == reverse("admin:flows_flow_changelist")
    assert sorted(Flow.objects.values_list("name", flat=True)) == ["Order notice", "Paid router"]


def test_import_lists_every_unsupported_node_and_saves_nothing(staff):
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("unsupported_component.json")})
    assert response.status_code == 200
    problems = response.context["form"].non_field_errors()
    assert len(problems) == 3, problems
    assert problems[0] == "Unsupported component 'Agent' (node Agent-k8J2m) has no langrun equivalent."
    assert problems[1].startswith("Unsupported component 'CustomComponent' (node CustomComponent-9hT1x)")
    assert problems[2].startswith("Unsupported component 'ParserComponent' (node ParserComponent-Str1n)") and "Stringify" in problems[2]
    html = response.content.decode()
    assert "Nothing was imported (3 problems)" in html and "Agent-k8J2m" in html
    assert not Flow.objects.exists()


def test_import_names_the_converted_node_of_a_graph_problem(staff):
    """A missing variable is found in the converted graph: the problem names the Langflow node it came from."""
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("chat_model_and_api.json")})
    assert response.context["form"].non_field_errors() == [
        "Node 'OpenAIModel-o9p8q', params.api_key: Variable 'OPENAI_API_KEY' does not exist; create it under /api/v1/variables/."
    ]
    assert not Flow.objects.exists()


def test_import_of_several_flows_names_the_flow_of_each_problem(staff):
    flows = [json.loads((FIXTURES / name).read_text()) for name in ("webhook_parser_chat_output.json", "unsupported_component.json")]
    content = json.dumps({"flows": [*flows, "nope"]}).encode()
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("two.json", content)})
    problems = response.context["form"].non_field_errors()
    assert problems[0].startswith("Flow 2 ('Has unsupported parts'): Unsupported component 'Agent' (node Agent-k8J2m)")
    assert problems[-1] == "Flow 3: A flow must be an object with 'name' and 'data'."
    assert not Flow.objects.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00garbage", "The file is not JSON"),
        (b"{nope", "The file is not JSON"),
        (b"[1, 2]", "not a flow export"),
        (b"{}", "not a flow export"),
        (b"", "The submitted file is empty."),
    ],
)
def test_import_of_a_garbage_file_is_a_form_error(staff, content, message):
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("garbage.json", content)})
    assert response.status_code == 200
    [error] = response.context["form"].errors["file"]
    assert message in error
    assert not Flow.objects.exists()


def test_import_of_json_without_a_graph_lists_the_problem(staff):
    response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("x.json", b'{"name": "No graph"}')})
    assert response.status_code == 200 and response.context["form"].non_field_errors()
    assert not Flow.objects.exists()


def test_import_without_a_file_is_a_form_error(staff):
    response = login(staff).post(reverse("admin:flows_flow_import"), {})
    assert response.status_code == 200 and response.context["form"].errors["file"]


def test_staff_import_only_for_themselves(staff, other):
    response = login(staff).post(
        reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json"), "user": str(other.pk)}
    )
    assert response.status_code == 302
    assert Flow.objects.get().user == staff


def test_superuser_imports_for_the_chosen_owner(superuser, other, make_flow):
    make_flow(other, endpoint_name="order-notice")
    c = login(superuser)
    response = c.post(reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json"), "user": str(other.pk)})
    assert response.status_code == 302
    imported = Flow.objects.get(name="Order notice")
    assert (imported.user, imported.endpoint_name) == (other, "order-notice-1")  # free among the owner's names
    response = c.post(reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json"), "user": "999999"})
    assert response.status_code == 200 and response.context["form"].errors["user"]


def test_import_page_needs_staff(make_user):
    c = login(make_user("plain"))
    assert c.get(reverse("admin:flows_flow_import")).status_code == 302  # to the login page
    assert c.post(reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json")}).status_code == 302
    assert not Flow.objects.exists()


# --- the service refusing a save the form accepted --------------------------------------------


@contextmanager
def name_taken_at_save(owner, endpoint_name):
    """Another flow takes `endpoint_name` right before the next flow is written: after every check, at the insert."""

    def take(sender, instance, **kwargs):
        if instance.name != "Racer":
            Flow.objects.create(user=owner, name="Racer", endpoint_name=endpoint_name, data=GREETING_FLOW)

    pre_save.connect(take, sender=Flow, dispatch_uid="name_taken_at_save")
    try:
        yield
    finally:
        pre_save.disconnect(sender=Flow, dispatch_uid="name_taken_at_save")


def test_service_turns_the_unique_constraint_into_endpoint_name_taken(staff):
    with name_taken_at_save(staff, "pasted"), pytest.raises(EndpointNameTaken):
        flow_create(user=staff, name="Pasted", endpoint_name="pasted", data=GREETING_FLOW)


def test_endpoint_name_taken_at_save_is_a_form_error_on_add(staff):
    with name_taken_at_save(staff, "pasted"):
        response = login(staff).post(reverse("admin:flows_flow_add"), flow_form())
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["endpoint_name"] == [
        "The endpoint name 'pasted' was taken by another flow while saving this one."
    ]
    assert not Flow.objects.exists()  # the whole save was rolled back


def test_endpoint_name_taken_at_save_is_a_form_error_on_change(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    with name_taken_at_save(staff, "renamed"):
        response = login(staff).post(
            reverse("admin:flows_flow_change", args=[flow.pk]), flow_form(name="Greeting", endpoint_name="renamed")
        )
    assert response.status_code == 200 and "endpoint_name" in response.context["adminform"].form.errors
    flow.refresh_from_db()
    assert flow.endpoint_name == "greet" and Flow.objects.count() == 1


def test_moving_a_flow_past_the_new_owners_share_of_schedules_is_a_form_error(superuser, other, make_flow, settings):
    settings.LANGRUN_MAX_SCHEDULES_PER_USER = 1
    flow = make_flow(superuser, endpoint_name="greet")
    flow_schedule_create(flow=flow, interval_minutes=5)
    flow_schedule_create(flow=make_flow(other, endpoint_name="theirs"), interval_minutes=5)
    response = login(superuser).post(
        reverse("admin:flows_flow_change", args=[flow.pk]), flow_form(name="Greeting", endpoint_name="greet", user=str(other.pk))
    )
    assert response.status_code == 200
    assert "at most 1 schedules" in response.context["adminform"].form.errors["user"][0]
    flow.refresh_from_db()
    assert flow.user == superuser


def test_endpoint_name_taken_during_an_import_is_a_form_error(staff):
    with name_taken_at_save(staff, "order-notice"):
        response = login(staff).post(reverse("admin:flows_flow_import"), {"file": upload("webhook_parser_chat_output.json")})
    assert response.status_code == 200
    assert "was taken by another flow during the import" in response.context["form"].non_field_errors()[0]
    assert not Flow.objects.exists()


def test_missing_variable_is_a_graph_field_error(staff, superuser, other):
    data = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "t", "type": "Text", "params": {"text": {"variable": "TOKEN"}}}],
        "edges": [],
    }
    variable_create(user=staff, name="TOKEN", value="v")
    response = login(superuser).post(reverse("admin:flows_flow_add"), flow_form(user=str(other.pk), data=json.dumps(data)))
    assert response.status_code == 200
    [error] = response.context["adminform"].form.errors["data"]
    assert error.startswith("Node 't', params.text: Variable 'TOKEN' does not exist")
    assert login(superuser).post(reverse("admin:flows_flow_add"), flow_form(user=str(staff.pk), data=json.dumps(data))).status_code == 302


# --- Django's permissions, on top of the owner scoping ------------------------------


def test_staff_without_permissions_reach_none_of_their_own_flows(bare_staff, make_flow):
    flow = make_flow(bare_staff)
    c = login(bare_staff)
    assert "Flows" not in c.get(reverse("admin:index")).content.decode()
    assert c.get(reverse("admin:flows_flow_changelist")).status_code == 403
    for name in ("change", "delete", "run"):
        assert c.get(reverse(f"admin:flows_flow_{name}", args=[flow.pk])).status_code == 403, name
    assert c.post(reverse("admin:flows_flow_add"), flow_form()).status_code == 403
    assert c.get(reverse("admin:flows_flow_import")).status_code == 403
    assert c.post(reverse("admin:flows_flow_delete", args=[flow.pk]), {"post": "yes"}).status_code == 403
    assert c.post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": "{}"}).status_code == 403
    assert Flow.objects.filter(pk=flow.pk).exists() and not FlowRun.objects.exists()


def test_staff_who_may_only_view_cannot_change_run_or_delete_their_flow(bare_staff, make_flow):
    flow = make_flow(bare_staff)
    grant(bare_staff, "flows.view_flow")
    c = login(bare_staff)
    assert c.get(reverse("admin:flows_flow_changelist")).status_code == 200
    page = c.get(reverse("admin:flows_flow_change", args=[flow.pk]))
    assert page.status_code == 200 and reverse("admin:flows_flow_run", args=[flow.pk]) not in page.content.decode()
    c.post(reverse("admin:flows_flow_change", args=[flow.pk]), flow_form(name="Renamed"))
    flow.refresh_from_db()
    assert flow.name == "Greeting"
    assert c.post(reverse("admin:flows_flow_run", args=[flow.pk]), {"payload": "{}"}).status_code == 403
    assert c.post(reverse("admin:flows_flow_delete", args=[flow.pk]), {"post": "yes"}).status_code == 403
    assert c.post(reverse("admin:flows_flow_add"), flow_form()).status_code == 403
    assert Flow.objects.count() == 1 and not FlowRun.objects.exists()


def test_change_permission_changes_without_deleting_and_still_not_anothers(bare_staff, other, make_flow):
    mine, theirs = make_flow(bare_staff), make_flow(other)
    grant(bare_staff, "flows.change_flow")
    c = login(bare_staff)
    response = c.post(reverse("admin:flows_flow_change", args=[mine.pk]), flow_form(name="Renamed"))
    assert response.status_code == 302, response.content.decode()[:2000]
    mine.refresh_from_db()
    assert mine.name == "Renamed"
    assert c.post(reverse("admin:flows_flow_delete", args=[mine.pk]), {"post": "yes"}).status_code == 403
    assert c.get(reverse("admin:flows_flow_change", args=[theirs.pk])).status_code == 404


def test_the_webhook_methods_are_set_on_the_change_page(staff, make_flow):
    flow = make_flow(staff, endpoint_name="greet")
    url = reverse("admin:flows_flow_change", args=[flow.pk])
    c = login(staff)
    assert 'name="methods" value="POST"' in c.get(url).content.decode()
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", methods=["GET", "POST"]))
    assert response.status_code == 302, response.content.decode()[:2000]
    flow.refresh_from_db()
    assert flow.allowed_methods == ("GET", "POST")
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", methods=["TRACE"]))
    assert response.status_code == 200 and "TRACE" in response.content.decode()
    flow.refresh_from_db()
    assert flow.allowed_methods == ("GET", "POST")


def test_the_verification_preset_is_set_on_the_change_page(staff, make_flow):
    from webhooks.signatures import webhook_signing_secret_set

    flow = make_flow(staff, endpoint_name="greet")
    url = reverse("admin:flows_flow_change", args=[flow.pk])
    c = login(staff)
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", verification='{"provider": "stripe"}'))
    assert response.status_code == 200 and "needs the flow&#x27;s secret" in response.content.decode()
    webhook_signing_secret_set(flow=flow, secret="whsec_abc")
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", verification='{"provider": "stripe"}'))
    assert response.status_code == 302, response.content.decode()[:2000]
    flow.refresh_from_db()
    assert flow.verification_settings == {"provider": "stripe"}
    page = c.get(url).content.decode()
    assert "{&quot;provider&quot;: &quot;stripe&quot;}</textarea>" in page  # the object, not its stored text
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", verification='{"provider": "stripe"}', dedupe_key="payload.["))
    assert response.status_code == 200 and "Not a valid JMESPath" in response.content.decode()
    response = c.post(
        url, flow_form(name="Greeting", endpoint_name="greet", verification='{"provider": "stripe"}', dedupe_key="payload.id")
    )
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.dedupe_key == "payload.id"
    response = c.post(
        url, flow_form(name="Greeting", endpoint_name="greet", verification='{"provider": "stripe"}', handshakes=["meta", "graph"])
    )
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.handshakes == "meta,graph"
    response = c.post(url, flow_form(name="Greeting", endpoint_name="greet", accept_if="payload.ok"))
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.accept_if == "payload.ok" and flow.verification_settings is None  # posted without it: removed


# --- pause and resume ----------------------------------------------------------------


def _flow_action(c, ids, name):
    return c.post(reverse("admin:flows_flow_changelist"), {"action": name, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_pause_and_resume_actions(staff, make_flow, monkeypatch):
    from flows.services import queue

    rung = []
    monkeypatch.setattr(queue, "flow_run_enqueue", lambda *, run_id, **kw: rung.append(str(run_id)) or True)
    flow = make_flow(staff, endpoint_name="greet")
    c = login(staff)
    response = _flow_action(c, [flow.pk], "pause_selected")
    assert "Paused 1 flow(s)." in messages_of(response)
    assert Flow.objects.get(pk=flow.pk).paused_at is not None
    listing = c.get(reverse("admin:flows_flow_changelist")).content.decode()
    assert "lr-badge-paused" in listing
    held = run_of(flow, execute=False)
    page = c.get(reverse("admin:flows_flowrun_change", args=[held.pk])).content.decode()
    assert "flow_paused" in page
    response = _flow_action(c, [flow.pk], "resume_selected")
    assert "Resumed 1 flow(s); 1 held run(s) released." in messages_of(response)
    assert Flow.objects.get(pk=flow.pk).paused_at is None and rung[-1] == str(held.pk)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["pause_selected", "resume_selected"])
def test_a_flow_deleted_while_the_pause_or_resume_action_runs_is_left_out(staff, make_flow, action):
    """The action acts on the flows the page listed; one deleted meanwhile is not a 404 page after the others changed."""
    from django.utils import timezone

    from tests.helpers import FlowDeletedMeanwhile

    kept, gone = make_flow(staff, endpoint_name="kept"), make_flow(staff, endpoint_name="gone")
    if action == "resume_selected":
        Flow.objects.update(paused_at=timezone.now())
    c = login(staff)
    with FlowDeletedMeanwhile(gone):
        response = _flow_action(c, [kept.pk, gone.pk], action)
    assert response.status_code == 200
    expected = "Paused 1 flow(s)." if action == "pause_selected" else "Resumed 1 flow(s); 0 held run(s) released."
    assert expected in messages_of(response)
    assert (Flow.objects.get(pk=kept.pk).paused_at is None) == (action == "resume_selected")
    assert not Flow.objects.filter(pk=gone.pk).exists()


def test_pause_action_ignores_other_users_flows(staff, other, make_flow):
    theirs = make_flow(other, endpoint_name="theirs")
    _flow_action(login(staff), [theirs.pk], "pause_selected")
    assert Flow.objects.get(pk=theirs.pk).paused_at is None


def test_pause_action_needs_the_change_permission(bare_staff, make_flow):
    grant(bare_staff, "flows.view_flow")
    flow = make_flow(bare_staff, endpoint_name="mine")
    _flow_action(login(bare_staff), [flow.pk], "pause_selected")
    assert Flow.objects.get(pk=flow.pk).paused_at is None


def test_the_response_is_set_on_the_add_and_change_pages(staff):
    respond = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "answer", "type": "Respond", "params": {"body": "ok"}}],
        "edges": [{"source": "hook", "target": "answer", "target_input": "data"}],
    }
    c = login(staff)
    add = reverse("admin:flows_flow_add")
    assert 'name="response"' in c.get(add).content.decode()
    response = c.post(add, flow_form(data=json.dumps(respond)))
    assert response.status_code == 200 and "answers the webhook only in flow mode" in response.content.decode()
    response = c.post(add, flow_form(data=json.dumps(respond), response='{"mode": "flow", "timeout": 5}'))
    assert response.status_code == 302, response.content.decode()[:2000]
    flow = Flow.objects.get(name="Pasted")
    assert flow.response_settings == {"mode": "flow", "timeout": 5}
    url = reverse("admin:flows_flow_change", args=[flow.pk])
    page = c.get(url).content.decode()
    assert "&quot;timeout&quot;: 5" in page, page[page.find("id_response") - 200 : page.find("id_response") + 400]
    static = '{"mode": "static", "headers": {"Set-Cookie": "a=1"}}'
    response = c.post(url, flow_form(data=json.dumps(GREETING_FLOW), response=static))
    assert response.status_code == 200 and "Set-Cookie cannot be set" in response.content.decode()
    response = c.post(url, flow_form(data=json.dumps(GREETING_FLOW), response='{"mode": "static", "body": "ok"}'))
    assert response.status_code == 302
    flow.refresh_from_db()
    assert flow.response_settings == {"mode": "static", "status": 200, "headers": {}, "body": "ok"}
