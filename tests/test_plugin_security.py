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
from test_results_report import make_result

from llem_core.analysis.results import result_path, run_dir, write_result

# starts Airflow's api-server app twice in fresh interpreters (tens of seconds)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
EVIL_RUN = "javascript:alert(3)\"'<b>"
RUN_ID = "manual__2026-11-29T10:00:00+00:00"
VIEWER = "login:viewer:viewer-pw-123"
STRICT_CSP = "default-src 'none'"
SECRET = "TOP-SECRET-c41f"
MATH_NAME = "$\\frac{a}{$ mathtext"
PLANTED = ('<html><head><meta http-equiv="refresh" content="0;url=https://evil.example/">'
           "</head><body>Your session expired: sign in again</body></html>")

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


def plant(root: Path, results: Path) -> dict[str, dict]:
    """What an experiment could write into the results folder, and the request params.

    Links (to a file, to a folder in the middle of a path, a run folder, a campaign
    folder) lead to SECRET; FIFOs stand where results, plans and summaries go; a run of
    valid results named as mathtext carries a planted report.html.
    """
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    agg = {"results": 1, "planned": 1, "missing": [], "notes": [SECRET],
           "table": [{"config_name": SECRET, "n": 1}]}
    (outside / "aggregate.json").write_text(json.dumps(agg))
    (outside / "plan.json").write_text(json.dumps({"runs": [
        {"name": SECRET, "config_hash": "0" * 12, "cycle": 1}]}))
    secret = make_result(SECRET, 3, 1, 1.0, 200.0, campaign="web", run_id="linked")
    write_result(secret, outside / "h" / "cycle_1.json")
    linked = run_dir(results, "web", "linked")
    (linked / "aaaaaaaaaaaa").mkdir(parents=True)
    (linked / "aaaaaaaaaaaa" / "cycle_1.json").symlink_to(outside / "h" / "cycle_1.json")
    (linked / "bbbbbbbbbbbb").symlink_to(outside / "h")  # a linked folder mid-path
    for name, target in (("aggregate.json", "aggregate.json"), ("plan.json", "plan.json"),
                         ("report.html", "secret.txt"), ("summary.csv", "secret.txt")):
        (linked / name).symlink_to(outside / target)
    (results / "web" / "outlink").symlink_to(outside)  # a run folder that is a link
    (results / "moved").symlink_to(outside)  # a campaign folder that is a link
    (outside / "r1").mkdir()
    (outside / "r1" / "aggregate.json").write_text(json.dumps(agg))
    fifo = run_dir(results, "web", "fifo")
    (fifo / "cccccccccccc").mkdir(parents=True)
    for name in ("aggregate.json", "plan.json", "summary.csv", "cccccccccccc/cycle_1.json"):
        os.mkfifo(fifo / name)
    for cycle in (1, 2, 3):
        for i, name in enumerate((MATH_NAME, "plain")):
            r = make_result(name, i + 1, cycle, 100.0 * (i + 1) + cycle, 500.0 - i + cycle,
                            campaign="math", run_id="m1")
            write_result(r, result_path(results, "math", "m1", r.config_hash, cycle))
    (run_dir(results, "math", "m1") / "report.html").write_text(PLANTED)
    math = run_dir(results, "math", "m1")
    return {
        "linked_dir": {"run_dir": str(linked)},
        "linked_agg": {"path": str(linked / "aggregate.json")},
        "linked_csv": {"path": str(linked / "summary.csv")},
        "linked_cycle": {"path": str(linked / "aaaaaaaaaaaa" / "cycle_1.json")},
        "linked_mid": {"path": str(linked / "bbbbbbbbbbbb" / "cycle_1.json")},
        "outlink_dir": {"run_dir": str(results / "web" / "outlink")},
        "outlink_agg": {"path": str(results / "web" / "outlink" / "aggregate.json")},
        "moved_dir": {"run_dir": str(results / "moved" / "r1")},
        "moved_agg": {"path": str(results / "moved" / "r1" / "aggregate.json")},
        "history_moved": {"campaign": "moved"},
        "fifo_dir": {"run_dir": str(fifo)},
        "fifo_cycle": {"path": str(fifo / "cccccccccccc" / "cycle_1.json")},
        "fifo_csv": {"path": str(fifo / "summary.csv")},
        "math_dir": {"run_dir": str(math)},
        "history_math": {"campaign": "math"},
    }


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
    # planted in the results folder (see plant)
    "run_linked": ("/llem/run", "linked_dir", VIEWER),
    "report_linked": ("/llem/report", "linked_dir", VIEWER),
    "file_linked_agg": ("/llem/file", "linked_agg", VIEWER),
    "file_linked_csv": ("/llem/file", "linked_csv", VIEWER),
    "file_linked_cycle": ("/llem/file", "linked_cycle", VIEWER),
    "file_linked_mid": ("/llem/file", "linked_mid", VIEWER),
    "run_outlink": ("/llem/run", "outlink_dir", VIEWER),
    "report_outlink": ("/llem/report", "outlink_dir", VIEWER),
    "file_outlink": ("/llem/file", "outlink_agg", VIEWER),
    "run_moved": ("/llem/run", "moved_dir", VIEWER),
    "file_moved": ("/llem/file", "moved_agg", VIEWER),
    "history_moved": ("/llem/history", "history_moved", VIEWER),
    "run_fifo": ("/llem/run", "fifo_dir", VIEWER),
    "report_fifo": ("/llem/report", "fifo_dir", VIEWER),
    "file_fifo_cycle": ("/llem/file", "fifo_cycle", VIEWER),
    "file_fifo_csv": ("/llem/file", "fifo_csv", VIEWER),
    "report_math": ("/llem/report", "math_dir", VIEWER),
    "history_math": ("/llem/history", "history_math", VIEWER),
    "index_after": ("/llem/", None, VIEWER),
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
    for name in ("moved", "math"):
        (camps / f"{name}.yaml").write_text(CAMPAIGN.replace("web", name).format(
            results=results))
    dirs = write_results(results)
    planted = plant(root, results)
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
        **planted,
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
             "span", "a", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "sup",
             "details", "summary", "div", "figure", "figcaption",
             # the drawing elements matplotlib writes (no script, foreignObject, animation
             # or link out of the page)
             "svg", "g", "path", "rect", "defs", "clippath", "use", "text", "tspan", "pattern"}
# Links a page may hold: its own routes, Airflow's page of a DAG run (same origin, same
# login), and references inside an inline SVG.
SAFE_HREFS = ("/llem/", "/dags/", "#")


def assert_inert(page: str) -> Tags:
    t = Tags()
    t.feed(page)
    for tag, attrs in t.tags:
        assert tag in SAFE_TAGS, (tag, attrs)
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        for key in ("href", "xlink:href"):
            if key in attrs:
                assert attrs[key].startswith(SAFE_HREFS), attrs
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


def test_report_gets_a_csp_that_runs_no_script_and_is_never_a_stored_file(responses):
    # The report used to be the run folder's report.html as it stood (written by anyone):
    # now it is rendered from the data on each request.
    r = responses["report"]
    csp = r["headers"]["content-security-policy"]
    assert csp.startswith(STRICT_CSP) and "script-src" not in csp and "unsafe-eval" not in csp
    assert r["headers"]["x-content-type-options"] == "nosniff"
    assert r["status"] == 200 and "alert(4)" not in r["body"]
    assert_inert(r["body"])


PLANTED_NAMES = ("run_linked", "report_linked", "file_linked_agg", "file_linked_csv",
                 "file_linked_cycle", "file_linked_mid", "run_outlink", "report_outlink",
                 "file_outlink", "run_moved", "file_moved", "history_moved", "index_after")


@pytest.mark.parametrize("name", PLANTED_NAMES)
def test_links_in_the_results_folder_never_lead_out(responses, name):
    """A link to a file, a folder mid-path, a run folder or a campaign folder that is a
    link: never followed, whatever the route."""
    r = responses[name]
    assert SECRET not in r["body"], r
    assert r["status"] in (200, 404), r


def test_linked_files_are_listed_problems_and_not_served(responses):
    for name in ("file_linked_agg", "file_linked_csv", "file_linked_cycle", "file_linked_mid",
                 "file_outlink", "file_moved", "run_outlink", "report_outlink", "run_moved"):
        assert responses[name]["status"] == 404, (name, responses[name])
    run = responses["run_linked"]
    assert run["status"] == 200 and "symbolic link" in run["body"]
    assert "aggregate.json: unreadable" in run["body"]
    assert "summary.csv" not in run["body"]  # no link offered to the linked summary
    report = responses["report_linked"]
    assert report["status"] == 200 and "symbolic link" in report["body"]
    assert "bbbbbbbbbbbb" in report["body"]  # the linked folder is named, not entered


@pytest.mark.parametrize("name", ["run_fifo", "report_fifo", "file_fifo_cycle",
                                  "file_fifo_csv", "index_after"])
def test_fifos_never_block_a_request(responses, name):
    r = responses[name]
    assert r["elapsed_s"] < 5, r["elapsed_s"]
    assert r["status"] == (404 if name.startswith("file_") else 200), r


def test_fifos_are_listed_problems(responses):
    assert "FIFO" in responses["run_fifo"]["body"]
    assert "FIFO" in responses["report_fifo"]["body"]


def test_a_planted_report_html_is_never_served(responses):
    r = responses["report_math"]
    assert r["status"] == 200, r
    assert "http-equiv" not in r["body"] and "sign in again" not in r["body"]
    assert "<svg" in r["body"]  # rendered from the results


def test_mathtext_names_are_text_in_report_and_history(responses):
    for name in ("report_math", "history_math"):
        r = responses[name]
        assert r["status"] == 200, r
        assert "could not be drawn" not in r["body"] and "<svg" in r["body"]
        assert "frac{a}" in r["body"]
        t = Tags()
        t.feed(r["body"])
        for tag, attrs in t.tags:
            assert tag not in ("script", "foreignobject", "iframe", "object", "embed"), tag
            assert not any(a.startswith("on") for a in attrs), (tag, attrs)
            assert not (tag == "meta" and "http-equiv" in attrs), attrs


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
    assert "batch_size=1" in body and "123.5 [120.0, 126.5]" in body
    assert "0.5000 [0.4000, 0.6000]" in body and "2.000 [1.900, 2.100]" in body  # ITL in ms
    assert "batch_size=2 (cycle 2): exit 1" in body
    index = responses["index"]["body"]
    assert "123.5 [120.0, 126.5]" in index and "Not aggregated yet" in index


def test_bad_aggregate_files_show_the_problem_not_an_error(responses):
    assert "aggregate.json: unreadable" in responses["run_corrupt"]["body"]
    shaped = responses["run_shaped"]["body"]
    assert "&#x27;table&#x27; is not a list" in shaped or "'table' is not a list" in shaped


def test_dag_run_tab_shows_that_runs_table(responses):
    assert "123.5 [120.0, 126.5]" in responses["dagrun"]["body"]
    assert responses["dagrun_unknown"]["status"] == 404
    plugins = json.loads(responses["plugins"]["body"])["plugins"]
    [ours] = [p for p in plugins if p["name"] == "llem_airflow"]
    [view] = [v for v in ours["external_views"] if v["destination"] == "dag_run"]
    # the UI replaces the placeholders with the URL-encoded ids
    assert view["href"] == "/llem/dag-run?dag_id={DAG_ID}&run_id={RUN_ID}"
    assert view["url_route"]
