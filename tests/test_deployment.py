"""The production compose file and Dockerfiles: validated and linted (no registry here).

`docker-compose config` renders the file as Compose would run it; the init service's
secret check and Redis's password are then exercised for real with bash and redis-server.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.airflow.yml"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY",
           "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD")
AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer",
                    "worker")
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(os.sys.executable).parent))
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs {tool}")
        pytest.skip(f"{tool} not installed")
    return path


def write_env(tmp_path: Path, **values: str) -> Path:
    """.env.example with every secret filled (or as given in ``values``)."""
    filled = {k: secrets.token_hex(20) for k in SECRETS} | values
    lines = []
    for ln in (REPO / ".env.example").read_text().splitlines():
        key = ln.split("=", 1)[0]
        lines.append(f"{key}={filled.pop(key)}" if key in filled else ln)
    lines += [f"{k}={v}" for k, v in filled.items()]
    env = tmp_path / ".env"
    env.write_text("\n".join(lines) + "\n")
    return env


def compose_config(env_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run([need("docker-compose"), "-f", str(COMPOSE), "--env-file",
                           str(env_file), "config"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def rendered(env_file: Path) -> dict:
    r = compose_config(env_file)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)["services"]


def shell(text: str) -> str:
    """A rendered command as the container's shell gets it (Compose unescapes $$)."""
    return text.replace("$$", "$")


def test_compose_file_validates_with_filled_example_env(tmp_path):
    services = rendered(write_env(tmp_path))
    assert {"postgres", "redis", *AIRFLOW_SERVICES} <= set(services)
    for name, svc in services.items():
        if name != "airflow-init":
            assert "healthcheck" in svc, name
    env = services["scheduler"]["environment"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # the UI/API and the private ports listen on the interfaces from .env (loopback here)
    for name in ("api-server", "postgres", "redis", "worker"):
        for port in services[name]["ports"]:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)
    worker = services["worker"]
    assert any("/var/run/docker.sock" in str(v) for v in worker["volumes"])
    command = worker["command"]
    assert "gpu-gpu01" in (" ".join(command) if isinstance(command, list) else command)


def test_production_stack_uses_the_fab_auth_manager(tmp_path):
    services = rendered(write_env(tmp_path))
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB, name
        assert not any("SIMPLE_AUTH_MANAGER" in k for k in env), name
    init = shell(services["airflow-init"]["command"][-1])
    assert "airflow users create --role Admin" in init
    assert '--password "$AIRFLOW_ADMIN_PASSWORD"' in init
    dockerfile = (REPO / "docker" / "Dockerfile.airflow").read_text()
    assert re.search(r'"apache-airflow-providers-fab==[\d.]+"', dockerfile)


def test_env_example_holds_no_secret_value():
    text = (REPO / ".env.example").read_text()
    for key in SECRETS:
        [line] = [ln for ln in text.splitlines() if ln.startswith(key + "=")]
        assert line == f"{key}=", line


def test_compose_refuses_the_example_env_as_is():
    r = compose_config(REPO / ".env.example")
    assert r.returncode != 0
    assert any(k in r.stderr for k in SECRETS), r.stderr


@pytest.mark.parametrize("key", SECRETS)
def test_compose_refuses_each_empty_secret(tmp_path, key):
    r = compose_config(write_env(tmp_path, **{key: ""}))
    assert r.returncode != 0
    assert f"set {key} in .env" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def init_service(tmp_path_factory) -> tuple[dict, dict[str, str]]:
    """airflow-init as rendered from a filled .env; (service, the .env secrets)."""
    values = {k: secrets.token_hex(20) for k in SECRETS}
    services = rendered(write_env(tmp_path_factory.mktemp("env"), **values))
    return services["airflow-init"], values


def run_init_check(init: dict, **env_values: str) -> subprocess.CompletedProcess:
    """airflow-init's command under bash with its rendered environment (``env_values`` as
    .env would give them); no airflow on PATH, so passing the secret check ends at
    `airflow db migrate` (command not found)."""
    env = {k: str(v) for k, v in init["environment"].items()} | env_values
    return subprocess.run(["/bin/bash", *[shell(a) for a in init["command"]]],
                          env=env | {"PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60)


def test_init_sees_each_secret_as_set_in_env(init_service):
    init, values = init_service
    for key, value in values.items():
        assert init["environment"][key] == value


@pytest.mark.parametrize(("value", "why"), [("CHANGE_ME_long_random_string", "CHANGE_ME"),
                                            ("short", "shorter than 16")])
@pytest.mark.parametrize("key", SECRETS)
def test_init_refuses_placeholder_or_short_secrets(init_service, key, value, why):
    r = run_init_check(init_service[0], **{key: value})
    assert r.returncode == 1, r.stdout + r.stderr
    assert key in r.stderr and why in r.stderr, r.stderr
    assert "airflow: command not found" not in r.stderr  # stopped before anything ran


def test_init_with_real_secrets_goes_on_to_migrate(init_service):
    r = run_init_check(init_service[0])
    assert r.returncode == 127 and "airflow: command not found" in r.stderr, r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_requires_the_password_and_its_healthcheck_knows_it(tmp_path):
    need("redis-server")
    password = secrets.token_hex(20)
    services = rendered(write_env(tmp_path, REDIS_PASSWORD=password))
    redis = services["redis"]
    broker = services["worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
    assert broker == f"redis://:{password}@redis:6379/0"
    port = free_port()
    # the rendered commands, moved to a free port and a scratch folder for the test
    start = shell(redis["command"][-1]).replace(
        "redis-server", f"redis-server --port {port} --save '' --dir {tmp_path}")
    check = shell(redis["healthcheck"]["test"][-1]).replace("redis-cli", f"redis-cli -p {port}")
    proc = subprocess.Popen([redis["command"][0], "-c", start], env={
        "PATH": "/usr/bin:/bin", "REDIS_PASSWORD": redis["environment"]["REDIS_PASSWORD"]},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                               text=True)
            if r.stdout.strip():
                break
            time.sleep(0.1)
        assert "NOAUTH" in r.stdout, r.stdout  # no password: refused
        ok = subprocess.run(["/bin/sh", "-c", check], env={"PATH": "/usr/bin:/bin",
                            "REDIS_PASSWORD": password}, timeout=30)
        assert ok.returncode == 0
        bad = subprocess.run(["/bin/sh", "-c", check], env={"PATH": "/usr/bin:/bin",
                             "REDIS_PASSWORD": "wrong"}, timeout=30)
        assert bad.returncode != 0  # NOAUTH/WRONGPASS is not healthy
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_extra_server_worker_points_at_the_main_server(tmp_path):
    services = rendered(write_env(tmp_path, LLEM_DB_HOST="10.0.0.5", LLEM_REDIS_HOST="10.0.0.5",
                                  LLEM_EXECUTION_API_URL="http://10.0.0.5:8080/execution/",
                                  LLEM_HOST="gpu02"))
    env = services["worker"]["environment"]
    assert "@10.0.0.5:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "@10.0.0.5:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://10.0.0.5:8080/execution/"
    assert services["worker"]["hostname"] == "gpu02"


def test_every_compose_variable_is_in_the_example_env():
    text = "\n".join(ln for ln in COMPOSE.read_text().splitlines()
                     if not ln.lstrip().startswith("#"))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))  # $${X}: the container's
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert used - documented == set()


def test_readme_multi_server_steps_match_the_compose_file():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Several servers"):readme.index("### Upgrading")]
    for needed in ("--no-deps worker", "LLEM_DB_HOST", "LLEM_REDIS_HOST",
                   "LLEM_EXECUTION_API_URL", "LLEM_PRIVATE_BIND", "AIRFLOW_BIND", "5432",
                   "6379", "8793"):
        assert needed in section, needed


@pytest.mark.parametrize("dockerfile", sorted(
    str(p.relative_to(REPO)) for p in (REPO / "docker").glob("Dockerfile*")))
def test_dockerfiles_lint_clean(dockerfile):  # every image, an engine's included
    r = subprocess.run([need("hadolint"), str(REPO / dockerfile)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_experiment_dockerfile_takes_base_image_arg():
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=" in text and "FROM ${BASE_IMAGE}" in text
