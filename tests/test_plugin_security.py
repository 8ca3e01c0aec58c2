"""The /llem plugin app inside Airflow's real api-server app: behind Airflow's auth, and
nothing a results folder holds comes back as something a browser would run.

Airflow runs in a fresh interpreter (tests/plugin_app_driver.py) on a SQLite DB made by
`airflow db migrate`, with the simple auth manager (all-admins mode off) and a viewer
whose token comes from the auth manager's own login endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from llem_core.results import run_dir

# starts Airflow's api-server app twice in fresh interpreters (tens of seconds)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
EVIL_RUN = "javascript:alert(3)\"'<b>"
RUN_ID = "manual__2026-11-29T10:00:00+00:00"
VIEWER = "login:viewer:viewer-pw-123"
STRICT_CSP = "default-src 'none'"

CAMPAIGN = """
campaign: web
base: {{model: org/model}}
grid: {{batch_size: [1, 2]}}
results_dir: {results}
"""


def cell(mean: float, lo: float, hi: float, method: str = "bca") -> dict:
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "method": method}


def write_results(results: Path) -> dict[str, Path]:
    """A good run, a hostile one, a corrupt one, one not aggregated yet; files."""
    good = run_dir(results, "web", RUN_ID)
    (good / "abc123").mkdir(parents=True)
    (good / "abc123" / "cycle_1.json").write_text(json.dumps({"cycle": 1, "note": EVIL}))
    (good / "aggregate.json").write_text(json.dumps({
        "results": 3, "planned": 4, "problems": [], "notes": ["n1"],
        "missing": [{"name": "batch_size=2", "config_hash": "h", "cycle": 2,
                     "reason": "exit 1"}],
        "table": [{"config_name": "batch_size=1", "n": 2,
                   "tokens_per_s": cell(123.456, 120.0, 126.5),
                   "j_per_token_adjusted": cell(0.5, 0.4, 0.6),
                   "ttft_p50_s": cell(0.01, 0.009, 0.011),
                   "itl_p50_s": cell(0.002, 0.0019, 0.0021)}]}))
    (good / "summary.csv").write_text("config_name,metric\n<script>,x\n")
    (good / "report.html").write_text(f"<html><body><script>alert(4)</script>{EVIL}</body>"
                                      "</html>")
    (good / "evil.html").write_text("<script>alert(5)</script>")
    hostile = results / "web" / EVIL_RUN.replace("/", "_")
    hostile.mkdir()
    (hostile / "aggregate.json").write_text(json.dumps({
        "results": 1, "planned": 1, "missing": [{"name": EVIL, "cycle": EVIL, "reason": EVIL}],
        "problems": [{"path": EVIL, "reason": EVIL}], "notes": [EVIL],
        "table": [{"config_name": EVIL, "n": 1, "tokens_per_s": cell(1, 0.5, 2, EVIL)}]}))
    corrupt = results / "web" / "corrupt"
    corrupt.mkdir()
    (corrupt / "aggregate.json").write_text("{not json")
    shaped = results / "web" / "wrong-shape"
    shaped.mkdir()
    (shaped / "aggregate.json").write_text(json.dumps({"results": "x", "table": "nope"}))
    (results / "web" / "pending").mkdir()
    return {"good": good, "hostile": hostile, "corrupt": corrupt, "shaped": shaped}


REQUESTS = {
    # name: (url, params(dirs) -> dict, auth)
    "index_anon": ("/llem/", None, "none"),
    "report_anon": ("/llem/report", "good_dir", "none"),
    "file_anon": ("/llem/file", "good_json", "none"),
    "run_anon": ("/llem/run", "good_dir", "none"),
    "dagrun_anon": ("/llem/dag-run", "dag_run", "none"),
    "history_anon": ("/llem/history", "history_web", "none"),
    "index_cookie_anon": ("/llem/", None, "cookie-less"),
    "api_anon": ("/api/v2/dags", None, "none"),
    "index_forged": ("/llem/", None, "forged"),
    "index_norole": ("/llem/", None, "role:"),
    "file_norole": ("/llem/file", "good_json", "role:"),
    "index": ("/llem/", None, VIEWER),
    "index_cookie": ("/llem/", None, "cookie:viewer:viewer-pw-123"),
    "report": ("/llem/report", "good_dir", VIEWER),
    "file_json": ("/llem/file", "good_json", VIEWER),
    "file_csv": ("/llem/file", "good_csv", VIEWER),
    "file_html": ("/llem/file", "good_html", VIEWER),
    "file_outside": ("/llem/file", "outside", VIEWER),
    "file_nul": ("/llem/file", "nul", VIEWER),
    "file_link_out": ("/llem/file", "link_out", VIEWER),
    "run_good": ("/llem/run", "good_dir", VIEWER),
    "run_hostile": ("/llem/run", "hostile_dir", VIEWER),
    "run_corrupt": ("/llem/run", "corrupt_dir", VIEWER),
    "run_shaped": ("/llem/run", "shaped_dir", VIEWER),
    "dagrun": ("/llem/dag-run", "dag_run", VIEWER),
    "dagrun_unknown": ("/llem/dag-run", "dag_run_unknown", VIEWER),
    "plugins": ("/api/v2/plugins", None, VIEWER),
    "history": ("/llem/history", "history_web", VIEWER),
    "history_unknown": ("/llem/history", "history_unknown", VIEWER),
}


SECRET_REQUESTS = {
    "index": ("/llem/", None, VIEWER),
    "run_web": ("/llem/run", "good_dir", VIEWER),
    "run_secret": ("/llem/run", "secret_dir", VIEWER),
    "report_secret": ("/llem/report", "secret_dir", VIEWER),
    "file_secret": ("/llem/file", "secret_json", VIEWER),
    "dagrun_secret": ("/llem/dag-run", "dag_run_secret", VIEWER),
}


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> tuple[dict[str, str], dict[str, dict]]:
    """A migrated SQLite Airflow home, two campaigns' results; (env, request params)."""
    root = tmp_path_factory.mktemp("plugin")
    results = root / "results"
    camps = root / "campaigns"
    camps.mkdir()
    (camps / "web.yaml").write_text(CAMPAIGN.format(results=results))
    (camps / "secret.yaml").write_text(CAMPAIGN.replace("web", "secret").format(
        results=results))
    dirs = write_results(results)
    (dirs["good"] / "passwd.json").symlink_to("/etc/passwd")
    secret = run_dir(results, "secret", "r1")
    secret.mkdir(parents=True)
    (secret / "aggregate.json").write_text(json.dumps({"results": 0, "table": []}))
    home = root / "home"
    (root / "plugins").mkdir()
    (root / "passwords.json").write_text(json.dumps({"viewer": "viewer-pw-123"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LLEM_"))}
    env.update({
        "AIRFLOW_HOME": str(home), "LLEM_CAMPAIGNS_DIR": str(camps),
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
    })
    airflow = Path(sys.executable).parent / "airflow"
    r = subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    good = dirs["good"]
    params = {
        "good_dir": {"run_dir": str(good)}, "good_json": {"path": str(good / "abc123" /
                                                                      "cycle_1.json")},
        "good_csv": {"path": str(good / "summary.csv")},
        "good_html": {"path": str(good / "evil.html")}, "outside": {"path": "/etc/passwd"},
        "nul": {"path": str(good) + "/x\x00.json"},
        "link_out": {"path": str(good / "passwd.json")},
        "hostile_dir": {"run_dir": str(dirs["hostile"])},
        "corrupt_dir": {"run_dir": str(dirs["corrupt"])},
        "shaped_dir": {"run_dir": str(dirs["shaped"])},
        "dag_run": {"dag_id": "llem_web", "run_id": RUN_ID},
        "dag_run_unknown": {"dag_id": "other_dag", "run_id": RUN_ID},
        "secret_dir": {"run_dir": str(secret)},
        "secret_json": {"path": str(secret / "aggregate.json")},
        "dag_run_secret": {"dag_id": "llem_secret", "run_id": "r1"},
        "history_web": {"campaign": "web"}, "history_unknown": {"campaign": EVIL},
        "_dirs": {k: str(v) for k, v in dirs.items()},
    }
    return env, params


def drive(env: dict[str, str], params: dict[str, dict],
          requests: dict[str, tuple]) -> dict[str, dict]:
    reqs = [{"url": url, "params": params[p] if p else None,
             "auth": "none" if auth == "cookie-less" else auth}
            for url, p, auth in requests.values()]
    r = subprocess.run([sys.executable, str(REPO / "tests" / "plugin_app_driver.py")],
                       input=json.dumps(reqs), env=env, capture_output=True, text=True,
                       timeout=300)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("LLEM-DRIVER ")]
    assert r.returncode == 0 and line, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(line[0].removeprefix("LLEM-DRIVER "))
    return dict(zip(requests, out, strict=True))


@pytest.fixture(scope="module")
def responses(airflow_env) -> dict[str, dict]:
    env, params = airflow_env
    got = drive(env, params, REQUESTS)
    got["_dirs"] = params["_dirs"]
    return got


@pytest.fixture(scope="module")
def per_dag(airflow_env) -> dict[str, dict]:
    """The same app under an auth manager that hides one DAG from the viewer."""
    env, params = airflow_env
    env = {**env, "PYTHONPATH": env["PYTHONPATH"] + os.pathsep + str(REPO / "tests"),
           "AIRFLOW__CORE__AUTH_MANAGER": "per_dag_auth_manager.PerDagAuthManager"}
    return drive(env, params, SECRET_REQUESTS)


def test_campaigns_of_unreadable_dags_are_hidden(per_dag):
    assert per_dag["index"]["status"] == 200
    assert "llem_web" in per_dag["index"]["body"]
    assert "llem_secret" not in per_dag["index"]["body"]
    assert per_dag["run_web"]["status"] == 200
    for name in ("run_secret", "report_secret", "file_secret"):
        assert per_dag[name]["status"] == 404, per_dag[name]
    assert per_dag["dagrun_secret"]["status"] == 403


def test_viewer_sees_every_campaign_under_global_roles(responses):
    assert "llem_secret" in responses["index"]["body"]


@pytest.mark.parametrize("name", ["index_anon", "report_anon", "file_anon", "run_anon",
                                  "dagrun_anon", "index_cookie_anon", "history_anon"])
def test_unauthenticated_requests_are_refused(responses, name):
    r = responses[name]
    assert r["status"] == 401, r
    assert "alert" not in r["body"] and "batch_size" not in r["body"]
    assert responses["api_anon"]["status"] == 401  # the REST API, for comparison


@pytest.mark.parametrize("name", ["index_forged", "index_norole", "file_norole"])
def test_bad_token_or_no_permission_is_refused(responses, name):
    assert responses[name]["status"] == 403, responses[name]


@pytest.mark.parametrize("name", ["index", "index_cookie", "report", "file_json", "run_good",
                                  "dagrun", "history"])
def test_viewer_with_a_valid_token_gets_the_pages(responses, name):
    assert responses[name]["status"] == 200, responses[name]


class Tags(HTMLParser):
    """Every start tag and its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


SAFE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "b",
             "span", "a", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}


def assert_inert(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    for tag, attrs in t.tags:
        assert tag in SAFE_TAGS, (tag, attrs)
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if "href" in attrs:
            assert attrs["href"].startswith("/llem/"), attrs
    return t


@pytest.mark.parametrize("name", ["index", "run_hostile", "dagrun", "run_corrupt",
                                  "run_shaped", "history"])
def test_pages_escape_hostile_values(responses, name):
    r = responses[name]
    assert r["status"] == 200
    assert r["headers"]["content-type"].startswith("text/html")
    assert r["headers"]["content-security-policy"].startswith(STRICT_CSP)
    assert "script-src" not in r["headers"]["content-security-policy"]
    assert r["headers"]["x-content-type-options"] == "nosniff"
    assert_inert(r["body"])


def test_history_of_an_unknown_campaign_is_not_found(responses):
    r = responses["history_unknown"]
    assert r["status"] == 404 and "<script>" not in r["body"]


def test_hostile_values_are_shown_as_text(responses):
    body = responses["run_hostile"]["body"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&gt;&lt;img" in body
    # the hostile folder's links still lead to it: its path is percent-encoded in the URL
    hrefs = [a["href"] for tag, a in assert_inert(responses["index"]["body"]).tags
             if tag == "a"]
    targets = {v for h in hrefs for v in parse_qs(urlsplit(h).query).get("run_dir", [])}
    assert responses["_dirs"]["hostile"] in targets
    assert EVIL_RUN in responses["_dirs"]["hostile"]


def test_stored_report_gets_a_csp_that_runs_no_script(responses):
    r = responses["report"]
    csp = r["headers"]["content-security-policy"]
    assert csp.startswith(STRICT_CSP) and "script-src" not in csp and "unsafe-eval" not in csp
    assert r["headers"]["x-content-type-options"] == "nosniff"


def test_result_files_are_json_or_downloads_never_html(responses):
    j = responses["file_json"]
    assert j["headers"]["content-type"] == "application/json"
    assert j["headers"]["x-content-type-options"] == "nosniff"
    assert json.loads(j["body"])["cycle"] == 1
    c = responses["file_csv"]
    assert c["status"] == 200
    assert c["headers"]["content-disposition"].startswith("attachment")
    assert c["headers"]["x-content-type-options"] == "nosniff"
    assert "html" not in c["headers"]["content-type"]
    assert responses["file_html"]["status"] == 404
    for name in ("file_outside", "file_nul", "file_link_out"):
        assert responses[name]["status"] == 404, responses[name]


def test_run_page_shows_counts_and_headline_table(responses):
    body = responses["run_good"]["body"]
    assert "planned <b>4</b> · measured <b>3</b> · failed or missing <b>1</b>" in body
    assert "batch_size=1" in body and "123.5 [120, 126.5]" in body
    assert "0.5 [0.4, 0.6]" in body and "0.002 [0.0019, 0.0021]" in body
    assert "batch_size=2 (cycle 2): exit 1" in body
    index = responses["index"]["body"]
    assert "123.5 [120, 126.5]" in index and "Not aggregated yet" in index


def test_bad_aggregate_files_show_the_problem_not_an_error(responses):
    assert "aggregate.json: unreadable" in responses["run_corrupt"]["body"]
    shaped = responses["run_shaped"]["body"]
    assert "&#x27;table&#x27; is not a list" in shaped or "'table' is not a list" in shaped


def test_dag_run_tab_shows_that_runs_table(responses):
    assert "123.5 [120, 126.5]" in responses["dagrun"]["body"]
    assert responses["dagrun_unknown"]["status"] == 404
    plugins = json.loads(responses["plugins"]["body"])["plugins"]
    [ours] = [p for p in plugins if p["name"] == "llem_airflow"]
    [view] = [v for v in ours["external_views"] if v["destination"] == "dag_run"]
    # the UI replaces the placeholders with the URL-encoded ids
    assert view["href"] == "/llem/dag-run?dag_id={DAG_ID}&run_id={RUN_ID}"
    assert view["url_route"]
