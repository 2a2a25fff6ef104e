"""The versions migration gives every existing flow a version 1 and attaches its runs to it."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_backfill_creates_version_one_and_links_runs():
    executor = MigrationExecutor(connection)
    executor.migrate([("flows", "0003_run_tweaks")])
    old = executor.loader.project_state([("flows", "0003_run_tweaks")]).apps
    User = old.get_model("langrun", "User")
    Flow = old.get_model("flows", "Flow")
    FlowRun = old.get_model("flows", "FlowRun")
    owner = User.objects.create(username="old-timer")
    flow = Flow.objects.create(user=owner, name="Old", data={"nodes": [{"id": "hook", "type": "Webhook"}], "edges": []})
    FlowRun.objects.create(flow=flow, user=owner, payload={})

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    from flows.models import FlowRun as Run
    from flows.models import FlowVersion

    [version] = FlowVersion.objects.filter(flow_id=flow.id)
    assert (version.number, version.data, version.author_id) == (1, flow.data, owner.id)
    assert set(Run.objects.filter(flow_id=flow.id).values_list("version_id", flat=True)) == {version.id}
