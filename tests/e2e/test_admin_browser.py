"""The admin in a real browser: headless Chromium against gunicorn (DEBUG off, collected static files) and a qcluster.

A person logs in, pastes a flow, sees its diagram, runs it with a test payload and
opens the run, then imports a Langflow export. Screenshots of both pages, light and dark, go to test-artifacts/.
"""

import json
import os
import subprocess
import sys
from urllib.parse import quote_plus

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from langrun.models import User
from tests.e2e.helpers import ROOT, Service
from tests.helpers import GREETING_FLOW, grant_owned_models

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "a-browser-test-pass-1"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        pytest.fail("Chromium and chromedriver must be installed in CI (.ci/run installs them).", pytrace=False)
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)", allow_module_level=True
    )

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def live(transactional_db, tmp_path):
    """gunicorn serving the static files collected to a fresh STATIC_ROOT, with DEBUG off, plus a qcluster."""
    svc = Service(tmp_path)
    svc.env["DEBUG"] = "false"
    svc.env["STATIC_ROOT"] = str(tmp_path / "static")
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=svc.env, check=True)
    svc.start_web()
    svc.start_cluster()
    yield svc
    svc.stop()


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def screenshot(driver, name: str) -> None:
    """The whole page, in the light and the dark admin theme."""
    ARTIFACTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        driver.execute_script("localStorage.setItem('theme', arguments[0]); document.documentElement.dataset.theme = arguments[0];", theme)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(max(height, 800), 4000))
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{theme}.png"))
        print(f"screenshot: {ARTIFACTS / f'{name}-{theme}.png'}")
    driver.set_window_size(1400, 1000)


def wait(driver, condition, timeout: float = 30):
    return WebDriverWait(
        driver, timeout, poll_frequency=0.2, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]
    ).until(condition)


def set_text(driver, element, text: str) -> None:
    # Like a paste: typing a whole graph key by key would be slow.
    element.clear()
    driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'));", element, text)


def test_log_in_paste_a_flow_run_it_and_see_every_node_succeed(live, browser):
    # The server runs the product's password hashers, not the tests' fast MD5 one.
    hasher = PBKDF2PasswordHasher()
    ada = User.objects.create(username="ada", is_staff=True, password=hasher.encode(PASSWORD, hasher.salt()))
    grant_owned_models(ada)  # the permissions a staff user needs to manage their own flows
    b = browser

    # Static files are served by whitenoise under gunicorn with DEBUG off.
    css = requests.get(f"{live.url}/static/admin/css/base.css", timeout=10)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert requests.get(f"{live.url}/static/flows/admin.css", timeout=10).status_code == 200

    b.get(f"{live.url}/admin/login/")
    b.find_element(By.ID, "id_username").send_keys("ada")
    b.find_element(By.ID, "id_password").send_keys(PASSWORD)
    b.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(b, lambda d: d.find_element(By.ID, "user-tools"))
    header_bg = b.execute_script("return getComputedStyle(document.getElementById('header')).backgroundColor")
    assert header_bg not in ("", "rgba(0, 0, 0, 0)", "transparent"), "the admin is unstyled"

    # Create a flow by pasting its JSON.
    b.get(f"{live.url}/admin/flows/flow/add/")
    b.find_element(By.ID, "id_name").send_keys("Greeting")
    b.find_element(By.ID, "id_endpoint_name").send_keys("greet")
    set_text(b, b.find_element(By.ID, "id_data"), json.dumps(GREETING_FLOW, indent=2))
    b.find_element(By.NAME, "_continue").click()

    # The diagram: three boxes with id and type, two arrows.
    svg = wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "svg.lr-diagram"))
    nodes = svg.find_elements(By.CSS_SELECTOR, "g.lr-node")
    assert [n.get_attribute("data-node-id") for n in nodes] == ["hook", "greet", "out"]
    assert "Template" in svg.get_attribute("innerHTML")
    assert len(svg.find_elements(By.CSS_SELECTOR, "path.lr-edge")) == 2
    xs = [float(n.find_element(By.TAG_NAME, "rect").get_attribute("x")) for n in nodes]
    assert xs == sorted(xs) and len(set(xs)) == 3  # left to right, one layer each
    assert b.find_element(By.ID, "lr-webhook-url").get_attribute("value") == f"{live.url}/api/v1/webhook/greet"
    assert "<YOUR_API_KEY>" in b.find_element(By.ID, "lr-curl").text
    screenshot(b, "admin-flow")

    # Run it with a test payload.
    b.find_element(By.CSS_SELECTOR, "a.lr-run-now").click()
    set_text(b, wait(b, lambda d: d.find_element(By.ID, "id_payload")), '{"name": "Ada"}')
    screenshot(b, "admin-run-now")
    b.find_element(By.CSS_SELECTOR, "#run-now-form input[type=submit]").click()
    wait(b, lambda d: d.find_element(By.LINK_TEXT, "Open the run")).click()

    # The run page refreshes itself until the worker has finished.
    def finished(d):
        # The page's queries are not one snapshot: wait for the run itself to be terminal, not just its node rows.
        badge = d.find_elements(By.CSS_SELECTOR, ".field-status_badge .lr-badge")
        rows = d.find_elements(By.CSS_SELECTOR, "tr.lr-node-row")
        return rows if len(rows) == 3 and badge and badge[0].text in ("succeeded", "failed") else False

    rows = wait(b, finished, timeout=60)
    statuses = {r.get_attribute("data-node-id"): r.find_element(By.CSS_SELECTOR, ".lr-badge").text for r in rows}
    assert statuses == {"hook": "succeeded", "greet": "succeeded", "out": "succeeded"}, live.log("cluster")
    assert "Hello Ada!" in b.find_element(By.CSS_SELECTOR, ".field-outputs_display").text
    assert b.find_element(By.CSS_SELECTOR, ".field-status_badge .lr-badge").text == "succeeded"
    run_id = b.current_url.rstrip("/").split("/")[-2]
    screenshot(b, "admin-run")

    # The lists: the flow's last run and the run's badge.
    b.get(f"{live.url}/admin/flows/flowrun/")
    assert b.find_element(By.CSS_SELECTOR, "#result_list .lr-badge-succeeded").text == "succeeded"
    screenshot(b, "admin-runs")

    # The runs list's trend chart: this hour's bar is the succeeded run, coloured by the theme's variables.
    chart = b.find_element(By.CSS_SELECTOR, ".lr-trend[data-range='24h'] svg.lr-chart")
    assert len(chart.find_elements(By.CSS_SELECTOR, "g.lr-chart-slot")) == 24
    bar = chart.find_element(By.CSS_SELECTOR, "rect.lr-chart-succeeded")
    assert float(bar.get_attribute("height")) > 0 and bar.rect["height"] > 0
    fills = {}
    for theme in ("light", "dark"):
        b.execute_script("document.documentElement.dataset.theme = arguments[0];", theme)
        fills[theme] = b.execute_script("return getComputedStyle(arguments[0]).fill", bar)
        assert fills[theme].startswith("rgb(") and fills[theme] != "rgb(0, 0, 0)", fills  # styled, not the default black
    assert fills["light"] != fills["dark"], fills
    b.find_element(By.CSS_SELECTOR, "a.lr-chart-range[href*='trends=30d']").click()
    chart = wait(b, lambda d: d.find_element(By.CSS_SELECTOR, ".lr-trend[data-range='30d'] svg.lr-chart"))
    assert len(chart.find_elements(By.CSS_SELECTOR, "g.lr-chart-slot")) == 30 and chart.find_elements(
        By.CSS_SELECTOR, "rect.lr-chart-succeeded"
    )
    screenshot(b, "admin-runs-30-days")

    # Search by the run id's first characters (a word that matches nothing finds nothing), then export what is shown.
    def search(term: str) -> list:
        box = b.find_element(By.ID, "searchbar")
        box.clear()
        box.send_keys(term)
        box.submit()
        wait(b, lambda d: f"q={quote_plus(term)}" in d.current_url and d.execute_script("return document.readyState") == "complete")
        return b.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")

    assert search("no such run") == []
    rows = search(run_id[:8])
    assert len(rows) == 1 and run_id[:8] in rows[0].text
    screenshot(b, "admin-runs-search")
    fetch = "fetch(arguments[0]).then(r => r.text().then(t => arguments[1]([r.status, r.headers.get('content-type'), t])))"
    for fmt in ("csv", "json"):
        href = b.find_element(By.CSS_SELECTOR, f"a.lr-export-{fmt}").get_attribute("href")
        assert f"q={run_id[:8]}" in href and f"format={fmt}" in href
        status, content_type, text = b.execute_async_script(fetch, href)
        assert status == 200 and content_type.startswith("text/csv" if fmt == "csv" else "application/json"), text
        if fmt == "csv":
            lines = text.strip().splitlines()
            assert lines[0].startswith("id,flow_id,flow_name,status") and len(lines) == 2 and lines[1].startswith(run_id)
        else:
            assert [r["id"] for r in json.loads(text)] == [run_id]
    b.get(f"{live.url}/admin/flows/flow/")
    assert b.find_element(By.CSS_SELECTOR, "#result_list .lr-badge-succeeded").text == "succeeded"
    screenshot(b, "admin-flows")

    # Import a Langflow export from the flows list: the new flow's page draws the converted graph.
    b.find_element(By.CSS_SELECTOR, "a.lr-import").click()
    wait(b, lambda d: d.find_element(By.ID, "id_file")).send_keys(str(ROOT / "tests/flows/fixtures/unsupported_component.json"))
    b.find_element(By.CSS_SELECTOR, "#import-form input[type=submit]").click()
    problems = wait(b, lambda d: d.find_elements(By.CSS_SELECTOR, "ul.lr-import-problems li"))
    assert len(problems) == 3 and "Agent-k8J2m" in problems[0].text
    screenshot(b, "admin-import-problems")
    b.find_element(By.ID, "id_file").send_keys(str(ROOT / "tests/flows/fixtures/if_else_branches.json"))
    b.find_element(By.CSS_SELECTOR, "#import-form input[type=submit]").click()
    svg = wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "svg.lr-diagram"))
    assert "Imported 1 flow(s)" in b.find_element(By.CSS_SELECTOR, ".messagelist").text
    drawn = {n.get_attribute("data-node-id") for n in svg.find_elements(By.CSS_SELECTOR, "g.lr-node")}
    assert drawn == {"Webhook-Rt5y6", "ParserComponent-St4tu", "ConditionalRouter-Fg4h5", "ChatOutput-Tru3e", "ChatOutput-Fa1se"}
    assert "Condition" in svg.get_attribute("innerHTML")
    screenshot(b, "admin-flow-imported")

    # A new API key is shown once, and calls the webhook URL the flow page gave.
    b.get(f"{live.url}/admin/langrun/apikey/add/")
    b.find_element(By.ID, "id_name").send_keys("browser")
    b.find_element(By.NAME, "_save").click()
    key = wait(b, lambda d: d.find_element(By.ID, "lr-new-key")).get_attribute("value")
    screenshot(b, "admin-apikey-created")
    response = requests.post(f"{live.url}/api/v1/webhook/greet", json={"name": "Grace"}, headers={"x-api-key": key}, timeout=10)
    assert response.status_code == 202, response.text
    b.get(f"{live.url}/admin/langrun/apikey/")
    assert key not in b.page_source

    # Nothing in the pages came from another host.
    resources = b.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(live.url) for r in resources), resources
