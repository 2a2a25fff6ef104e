"""Property-based fuzzing of the whole API with schemathesis, against gunicorn serving the generated schema.

Every schemathesis check runs (no 5xx, documented status codes, content types, headers and
response schemas, invalid input rejected, auth enforced, deleted objects gone, ...). Run time is
bounded by the number of examples per operation (SCHEMATHESIS_MAX_EXAMPLES, default 50); the seed
is fixed so CI is reproducible, and SCHEMATHESIS_SEED picks another one to explore.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.services.execution import flow_run_execute
from flows.services.flows import flow_create
from flows.services.runs import flow_run_create
from langrun.models import User
from langrun.services import api_key_create
from tests.e2e.helpers import Service
from tests.helpers import GREETING_FLOW

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def fuzz_service(transactional_db, tmp_path):
    # Staff, so that the user list is exercised too; one flow and one finished run to find.
    user = User.objects.create_user("fuzz", is_staff=True)
    flow = flow_create(user=user, name="Greeting", endpoint_name="greet", data=GREETING_FLOW)
    run = flow_run_create(flow=flow, user=user, trigger="webhook", payload={"name": "Ada"})
    flow_run_execute(run_id=run.id)
    key = api_key_create(user=user, name="fuzz").key
    svc = Service(tmp_path)
    # No worker runs here: webhook runs stay queued, so ?wait= and synchronous runs must stay short.
    svc.env.update({"LANGRUN_WEBHOOK_MAX_WAIT": "0.2", "LANGRUN_SYNC_RUN_TIMEOUT": "2", "LANGRUN_STREAM_LIFETIME": "2"})
    svc.start_web()
    yield svc, key
    svc.stop()


def test_the_api_conforms_to_its_schema_under_fuzzing(fuzz_service, tmp_path):
    svc, key = fuzz_service
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{svc.url}/api/schema/?format=json",
        "--header",
        f"x-api-key: {key}",
        "--checks",
        "all",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50"),
        "--seed",
        os.environ.get("SCHEMATHESIS_SEED", "1"),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--no-color",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found problems:\n{output}\n--- server log ---\n{svc.log('web')[-5000:]}"
    counts = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", output)
    assert counts and counts[1] == counts[2] == counts[3] and int(counts[3]) >= 18, output  # every operation was fuzzed
