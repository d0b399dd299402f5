"""The dashboard in a real headless Chromium, against a real manager, agent and InfluxDB.

Every page is read through what the browser really holds: the page's DOM, and
its Bokeh document (``Bokeh.documents[0].get_model_by_name(...)``). A
screenshot of each page goes to ``test-output/<test>/``.
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest

from tests.conftest_influx import InfluxFixture
from tests.dashboard.cdp import Browser, Tab
from tests.dashboard.conftest import PASSWORD, DashboardProc
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

#: Finds a button by its label, through the shadow roots Bokeh's widgets live in,
#: and clicks it as a user would.
CLICK = """((label) => {
  const walk = (root) => { for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'BUTTON' && el.textContent.trim() === label) return el;
      if (el.shadowRoot) { const f = walk(el.shadowRoot); if (f) return f; } } return null; };
  const b = walk(document); if (!b) return false; b.click(); return true; })"""
BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


def model(name: str) -> str:
    """JavaScript for a model of the page's Bokeh document."""
    return f"Bokeh.documents[0].get_model_by_name({json.dumps(name)})"


def wait_doc(tab: Tab, name: str, timeout: float = 20.0) -> None:
    """Until the page's Bokeh document has arrived and holds model ``name``."""
    tab.wait(f"window.Bokeh && Bokeh.documents.length > 0 && {model(name)} !== null", timeout,
             f"Bokeh document with {name}")


#: The data source of the page's CPU chart (the node's ``node:<name>`` source).
CPU = f"{model('fig:cpu')}.renderers.find(r => r.data_source && r.data_source.data.busy).data_source"


def submit_cli(c: Cluster, *args: str) -> str:
    rc, out, err = c.cli("run", *args)
    assert rc == 0, err
    return out.splitlines()[0]


def job_ids(c: Cluster) -> set[str]:
    return {j["id"] for j in c.cli_json("jobs")}


def fetch(dashboard: DashboardProc, method: str, path: str, body: str = "",
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def log_in(browser: Browser, dashboard: DashboardProc) -> tuple[str, Tab]:
    """A fresh browser context, logged in through the login form."""
    ctx = browser.new_context()
    tab = browser.new_tab(f"{dashboard.url}/login", context=ctx)
    tab.js(f"document.getElementById('password').value = {json.dumps(PASSWORD)};"
           "document.getElementById('login-submit').click()")
    tab.conn.wait_event("Page.loadEventFired")
    tab.wait("document.getElementById('logout') !== null", 10, "the logged-in header")
    return ctx, tab


# --- pages ------------------------------------------------------------------------------------


def test_overview_lists_the_local_agent(browser: Browser, dashboard: DashboardProc,
                                        output_dir: Path) -> None:
    tab = browser.new_tab(f"{dashboard.url}/")
    try:
        wait_doc(tab, "nodes")
        names = tab.wait(f"{model('nodes')}.data.name.includes('node1') && "
                         f"{model('nodes')}.data.name", 15, "node1 in the nodes table")
        row = names.index("node1")
        nodes = tab.js(f"{model('nodes')}.data")
        assert nodes["state"][row] in ("ready", "busy")
        assert nodes["perf"][row].startswith(("yes", "no"))
        assert nodes["heartbeat"][row].endswith("ago")
        tab.wait(f"{model('nodes')}.data.cpu_line[{row}].length > 0", 20,
                 "node1's CPU/mem sparkline")
        tab.screenshot(output_dir / "overview.png")
        # The page loads only the BokehJS bundles it uses (dashboard/pages/base.py):
        # not bokeh-gl and bokeh-mathjax, half of what Bokeh's autoload.js would load.
        scripts = tab.js("performance.getEntriesByType('resource').map(e => e.name)"
                         ".filter(n => n.includes('/static/js/'))")
        loaded = sorted(s.rsplit("/", 1)[1].split(".")[0] for s in scripts)
        assert loaded == ["bokeh", "bokeh-tables", "bokeh-widgets"], scripts
    finally:
        tab.close()


def test_live_cpu_chart_streams_while_a_job_runs(browser: Browser, dashboard: DashboardProc,
                                                 dash_cluster: Cluster, output_dir: Path) -> None:
    job = submit_cli(dash_cluster, "--collect", "system,process", "--", sys.executable, "-c",
                     BUSY.format(s=8))
    tab = browser.new_tab(f"{dashboard.url}/live?node=node1&job={job}")
    try:
        wait_doc(tab, "fig:cpu")
        assert tab.js(f"{CPU}.name") == "node:node1"
        first = tab.js(f"{CPU}.data.busy.length")
        second = tab.wait(f"{CPU}.data.busy.length > {first} && {CPU}.data.busy.length", 10,
                          "new cpu points")
        assert second > first
        # The job's process tree streams too, and shows the busy loop working.
        tab.wait(f"{model('proc:node1')}.data.cpu_pct.some(v => v > 10)", 15,
                 "the job's process tree busy")
        tab.screenshot(output_dir / "live.png")
    finally:
        tab.close()
        dash_cluster.cli("cancel", job)


def test_refresh_keeps_the_chart_history(browser: Browser, dashboard: DashboardProc,
                                         output_dir: Path) -> None:
    tab = browser.new_tab(f"{dashboard.url}/live?node=node1")
    try:
        wait_doc(tab, "fig:cpu")
        tab.wait(f"{CPU}.data.t.length >= 3", 15, "three cpu points")
        before = tab.js(f"{CPU}.data.t")
        tab.reload()
        wait_doc(tab, "fig:cpu")
        # Read at once: the document arrives with the backfill already in it.
        after = tab.js(f"{CPU}.data.t")
        assert len(after) >= len(before) - 1, (len(before), len(after))
        assert after[0] <= before[0]
        assert "history from InfluxDB" in tab.js(f"{model('chart_note')}.text")
        tab.screenshot(output_dir / "live-after-refresh.png")
    finally:
        tab.close()


# --- changing things ------------------------------------------------------------------------------


def test_anonymous_visitor_cannot_create_or_cancel(browser: Browser, dashboard: DashboardProc,
                                                   dash_cluster: Cluster,
                                                   output_dir: Path) -> None:
    c = dash_cluster
    running = submit_cli(c, "--", "sleep", "30")
    before = job_ids(c)
    ctx = browser.new_context()
    tab = browser.new_tab(f"{dashboard.url}/jobs/new", context=ctx)
    try:
        assert tab.js("document.getElementById('login-needed') !== null")
        tab.js("document.getElementById('command').value = 'echo should-not-run';"
               "document.getElementById('create-task').click()")
        tab.conn.wait_event("Page.loadEventFired")
        assert "Log in to create jobs" in tab.js("document.getElementById('error-message').textContent")
        tab.screenshot(output_dir / "create-refused.png")
        # The cancel form's POST, with a valid XSRF token from the form, is refused as well.
        tab.navigate(f"{dashboard.url}/jobs/new")
        status = tab.js(f"""fetch('/jobs/{running}/cancel', {{method: 'POST',
            headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
            body: '_xsrf=' + encodeURIComponent(document.querySelector('input[name=_xsrf]').value)
            }}).then(r => r.status)""", await_promise=True)
        assert status == 403
        # And the websocket path: Bokeh button callbacks check the login themselves.
        tab.navigate(f"{dashboard.url}/jobs/{running}")
        wait_doc(tab, "action_status")
        assert tab.wait(f"{CLICK}('Run again')", 10, "the Run again button")
        tab.wait(f"{model('action_status')}.text.includes('Refused')", 10, "refusal")
        assert tab.wait(f"{CLICK}('Cancel job')", 10, "the Cancel button")
        tab.wait(f"{model('action_status')}.text.includes('log in to cancel')", 10, "refusal")
        tab.screenshot(output_dir / "buttons-refused.png")
        assert job_ids(c) == before
        assert c.job(running)["state"] == "running"
        assert "refused to create jobs from a Bokeh session" in dashboard.log()
    finally:
        tab.close()
        c.cli("cancel", running)


def test_task_created_through_the_form_runs_and_succeeds(
        browser: Browser, dashboard: DashboardProc, dash_cluster: Cluster,
        output_dir: Path) -> None:
    c = dash_cluster
    _, tab = log_in(browser, dashboard)
    try:
        tab.navigate(f"{dashboard.url}/jobs/new")
        tab.js("document.getElementById('command').value = "
               "\"python3 -c 'print(\\\"hello from the dashboard\\\")'\";"
               "document.getElementById('name').value = 'from-the-form';"
               "document.querySelector('input[name=nodes][value=node1]').checked = true;"
               "document.querySelector('input[name=collect][value=process]').checked = true;")
        tab.screenshot(output_dir / "new-task.png")
        tab.js("document.getElementById('create-task').click()")
        job = tab.wait("location.pathname.startsWith('/jobs/') && location.pathname != "
                       "'/jobs/new' && location.pathname.split('/')[2]", 15, "the job page")
        wait_doc(tab, "job_state")
        tab.wait(f"{model('job_state')}.text == 'succeeded'", 30, "the job to succeed")
        tab.reload()
        assert tab.js("document.getElementById('state').textContent") == "succeeded"
        assert "hello from the dashboard" in tab.js("document.querySelector('pre.stdout').textContent")
        wait_doc(tab, "runs")
        tab.screenshot(output_dir / "job.png")
        done = c.job(job)
        assert done["name"] == "from-the-form"
        assert [(r["node"], r["state"], r["exit_code"]) for r in done["runs"]] == \
            [("node1", "succeeded", 0)]
        # Logged in, the same Bokeh button that refused the anonymous visitor works.
        assert tab.wait(f"{CLICK}('Run again')", 10, "the Run again button")
        text = tab.wait(f"{model('action_status')}.text.includes('Submitted as') && "
                        f"{model('action_status')}.text", 15, "the resubmission")
        again = text.split("/jobs/")[1].split("'")[0]
        c.wait_job_state(again, {"succeeded"})
        tab.navigate(f"{dashboard.url}/jobs?q=from-the-form")
        assert tab.js("document.querySelectorAll('#jobs tr').length") == 3  # header + 2 jobs
        tab.screenshot(output_dir / "jobs.png")
    finally:
        tab.close()


def test_report_and_compare_pages(browser: Browser, dashboard: DashboardProc,
                                  dash_cluster: Cluster, output_dir: Path) -> None:
    c = dash_cluster
    base = submit_cli(c, "--wait", "--collect", "system,process", "--", sys.executable, "-c",
                      BUSY.format(s=1.5))
    cand = submit_cli(c, "--wait", "--collect", "system,process", "--", sys.executable, "-c",
                      BUSY.format(s=1.5))
    tab = browser.new_tab(f"{dashboard.url}/report/{base}")
    try:
        shown = tab.js("document.getElementById('report') !== null")
        error = tab.js("(document.getElementById('report-error') || {}).textContent || ''")
        assert shown or error.startswith("The manager could not produce this"), error
        rows = tab.js("[...document.querySelectorAll('table.summary td:first-child')]"
                      ".map(td => td.textContent)")
        assert "cpu busy %" in rows and "tree cpu %" in rows, rows
        tab.screenshot(output_dir / "report.png")
        status, body = fetch(dashboard, "GET", f"/report/{base}/download?format=json")
        if shown:
            assert status == 200 and isinstance(json.loads(body), dict)
        else:
            assert status in (400, 404, 503), status
        tab.navigate(f"{dashboard.url}/compare?base={base}&cand={cand}")
        assert tab.js("document.getElementById('comparison') !== null || "
                      "document.getElementById('compare-error') !== null")
        assert tab.js("document.querySelectorAll('table.summary').length") >= 2
        tab.screenshot(output_dir / "compare.png")
    finally:
        tab.close()


#: JS: every ``points:<metric>`` source of the page's Bokeh document, as {metric: data}.
HISTORY_POINTS = """Object.fromEntries([...Bokeh.documents[0].all_models]
  .filter(m => typeof m.name === 'string' && m.name.startsWith('points:'))
  .map(m => [m.name.slice(7), {job: [...m.data.job], url: [...m.data.url]}]))"""
#: JS: whether a tap on a point opens ``@url`` (the TapTool's OpenURL callback).
TAP_OPENS_URL = """[...Bokeh.documents[0].all_models].some(m => m.type === 'TapTool'
  && m.callback && m.callback.url === '@url')"""
#: JS: canvases inside Bokeh's shadow roots.
CANVASES = """(() => { let n = 0; const walk = (root) => root.querySelectorAll('*').forEach(
  (el) => { if (el.tagName === 'CANVAS') n++; if (el.shadowRoot) walk(el.shadowRoot); });
  walk(document); return n; })()"""


def test_history_page_charts_the_series_and_links_its_jobs(
        browser: Browser, dashboard: DashboardProc, dash_cluster: Cluster,
        output_dir: Path) -> None:
    c = dash_cluster
    series = f"hist-{uuid.uuid4().hex[:8]}"
    jobs = [submit_cli(c, "--wait", "--name", series, "--tag", f"version=1.{i}", "--collect",
                       "process", "--", sys.executable, "-c", BUSY.format(s=0.3))
            for i in range(3)]
    tab = browser.new_tab(f"{dashboard.url}/history?" + urllib.parse.urlencode(
        {"series": series}))
    try:
        error = tab.js("(document.getElementById('history-error') || {}).textContent || ''")
        assert error == "", error
        lead = tab.js("document.querySelector('#history .big').textContent")
        assert lead.startswith(f"Series {series}: 3 job(s) in version order"), lead
        wait_doc(tab, "history")
        points = tab.wait(f"Object.keys({HISTORY_POINTS}).length > 0 && {HISTORY_POINTS}", 20,
                          "a chart with the series' points")
        for data in points.values():
            assert data["job"] == jobs, "one point per job, in version order"
            assert data["url"] == [f"/jobs/{j}" for j in jobs]
        assert tab.js(TAP_OPENS_URL), "a click on a point opens its job"
        assert tab.wait(f"{CANVASES} >= {len(points)} && {CANVASES}", 20, "the charts drawn")
        assert tab.js("document.querySelectorAll('#history-tables a[href=\"/jobs/"
                      f"{jobs[0]}\"]').length") >= 1
        tab.screenshot(output_dir / "history.png")
        # A job's page links to its series, and its report says where the series stands.
        tab.navigate(f"{dashboard.url}/jobs/{jobs[-1]}")
        href = tab.js("document.getElementById('series-link').getAttribute('href')")
        assert href == "/history?" + urllib.parse.urlencode({"series": series})
        tab.navigate(f"{dashboard.url}/report/{jobs[-1]}")
        line = tab.js("(document.querySelector('#headline .series') || {}).textContent || ''")
        assert line.startswith(f"Series {series} — "), line
        assert tab.js("document.querySelector('#headline .series a').getAttribute('href')") \
            == href
        tab.screenshot(output_dir / "report-headline.png")
    finally:
        tab.close()


# --- the doors that are not pages --------------------------------------------------------------------


def test_foreign_origins_hosts_and_unsigned_sessions_are_refused(
        dashboard: DashboardProc) -> None:
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "bokeh"}
    status, _ = fetch(dashboard, "GET", "/bk/live/ws",
                     headers={**ws, "Origin": "http://evil.example:8080"})
    assert status == 403
    status, _ = fetch(dashboard, "GET", "/", headers={"Host": "evil.example"})
    assert status == 403
    status, _ = fetch(dashboard, "POST", "/jobs/new", body="command=true",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 403  # no XSRF token
    args = urllib.parse.urlencode({"bokeh-session-id": "forged-session-id",
                                   "bokeh-absolute-url": f"{dashboard.url}/bk/overview",
                                   "bokeh-autoload-element": "x"})
    status, _ = fetch(dashboard, "GET", f"/bk/overview/autoload.js?{args}")
    assert status == 403


def test_off_loopback_viewing_needs_a_login_too(dash_cluster: Cluster, influxdb: InfluxFixture,
                                                tmp_path: Path, module_logs: list[Path]) -> None:
    # Configured for every interface; the socket it inherits stays on loopback for the test.
    d = DashboardProc(tmp_path, dash_cluster.manager.router_port, influxdb.url,
                      dash_cluster.database,  # type: ignore[attr-defined]
                      web="bind_addr = 0.0.0.0\nallowed_origins = 127.0.0.1:{port}\n")
    module_logs.append(d.log_path)
    try:
        d.start()
        assert "viewing: login required" in d.log()
        status, _ = fetch(d, "GET", "/jobs")
        assert status == 302
        args = urllib.parse.urlencode({"bokeh-absolute-url": f"{d.url}/bk/overview",
                                       "bokeh-autoload-element": "x"})
        status, _ = fetch(d, "GET", f"/bk/overview/autoload.js?{args}")
        assert status in (302, 403)  # Bokeh's own handlers check the login as well
        login = login_cookie(d)
        status, body = fetch(d, "GET", "/jobs", headers={"Cookie": login})
        assert status == 200 and "<h1>Jobs</h1>" in body
        status, _ = fetch(d, "GET", f"/bk/overview/autoload.js?{args}", headers={"Cookie": login})
        assert status == 200
    finally:
        d.stop()


def login_cookie(d: DashboardProc) -> str:
    """Log in over plain HTTP (XSRF cookie and field, then the password); the Cookie header."""
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    try:
        conn.request("GET", "/login")
        response = conn.getresponse()
        page = response.read().decode()
        xsrf_cookie = response.getheader("Set-Cookie", "").split(";")[0]
        token = page.split('name="_xsrf" value="')[1].split('"')[0]
        body = urllib.parse.urlencode({"_xsrf": token, "password": PASSWORD, "next": "/"})
        conn.request("POST", "/login", body=body, headers={
            "Cookie": xsrf_cookie, "Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        assert response.status == 302, response.status
        login = next(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or []
                     if c.startswith("ptap_login="))
        return f"{xsrf_cookie}; {login}"
    finally:
        conn.close()
