"""The experiment host (isolation process and warm) for real: a host process preloads torch
and transformers, runs experiments of the tiny model in forked children or in a warm worker,
and fails an experiment (never itself) when a child dies, hangs or loses its task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llem_core.analysis.results import RunSpec, read_result
from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash
from llem_core.runtime.supervisor.client import alive, request, run_on_host
from llem_core.runtime.supervisor.protocol import HostError

pytestmark = pytest.mark.slow


def spec(model: Path, cycle: int = 1, **over: object) -> RunSpec:
    base = {"model": str(model), "dtype": "float32", "device": "cpu", "max_input_tokens": 16,
            "max_output_tokens": 4, "min_output_tokens": 4, "warmup_runs": 0,
            "prompts": {"count": 2, "length": 16}, "energy": {"meter": "none"}}
    cfg = ExperimentConfig(**{**base, **over})
    return RunSpec(campaign="h", run_id="r", name="x", config_hash=config_hash(cfg),
                   cycle=cycle, config=cfg)


def slow_spec(model: Path) -> RunSpec:
    return spec(model, max_output_tokens=400, min_output_tokens=400,
                prompts={"count": 64, "length": 16}, max_input_tokens=16)


class HostProc:
    def __init__(self, tmp: Path, mode: str) -> None:
        self.mode = mode
        self.sock = tmp / "h" / "host.sock"
        self.log = tmp / f"host-{mode}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llem_core", "host", "--socket", str(self.sock),
             "--mode", mode], stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True)
        deadline = time.monotonic() + 120
        while alive(self.sock) is None:
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "host did not come up"
            time.sleep(0.2)

    def run(self, s: RunSpec, out: Path, timeout_s: float | None = None
            ) -> tuple[int, str | None, list[str]]:
        lines: list[str] = []
        # the plan gives every run its campaign's isolation, which the host's mode is
        s = s if s.isolation else s.model_copy(update={"isolation": self.mode})
        rc, reason = run_on_host(self.sock, s.model_dump_json(), str(out), lines.append,
                                 timeout_s)
        return rc, reason, lines

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def host_factory(tmp_path: Path):
    made: list[HostProc] = []

    def make(mode: str) -> HostProc:
        h = HostProc(tmp_path, mode)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_process_mode_runs_each_experiment_in_a_fresh_child(tiny_model, tmp_path, host_factory):
    host = host_factory("process")
    pids = set()
    for cycle in (1, 2):
        out = tmp_path / f"cycle_{cycle}.json"
        rc, reason, lines = host.run(spec(tiny_model, cycle), out)
        assert (rc, reason) == (0, None), lines
        r = read_result(out)
        assert r.provenance.isolation == "process" and not r.provenance.model_already_loaded
        assert r.provenance.timings_s["import"] < 1.0  # torch/transformers were preloaded
        assert r.metrics.output_tokens > 0
        assert any('"config_hash"' in ln for ln in lines)  # the summary line came through
        pids.add(request(host.sock, {"op": "ping"})["pid"])
    assert len(pids) == 1  # the same host served both
    assert children_of(host.proc.pid) == []  # each child is gone once its result is written
    # a run of another isolation is refused: its result would record what did not happen
    out = tmp_path / "other.json"
    rc, reason, _ = host.run(spec(tiny_model, 3).model_copy(update={"isolation": "warm"}), out)
    assert rc == 1 and "isolation is warm" in reason and not out.exists()


def test_warm_mode_keeps_the_model_for_equal_model_settings(tiny_model, tmp_path,
                                                            host_factory):
    host = host_factory("warm")
    outs = []
    for i, over in enumerate([{}, {"batch_size": 2}, {"dtype": "bfloat16"}]):
        out = tmp_path / f"r{i}.json"
        rc, reason, lines = host.run(spec(tiny_model, i + 1, **over), out)
        assert (rc, reason) == (0, None), lines
        outs.append(read_result(out))
    first, same_model, other_dtype = outs
    assert [o.provenance.isolation for o in outs] == ["warm"] * 3
    assert not first.provenance.model_already_loaded
    assert same_model.provenance.model_already_loaded
    assert same_model.provenance.timings_s["load"] == 0.0
    # clearing the kept model's caches is timed, and only where a model was kept
    assert "reuse" in same_model.provenance.timings_s
    assert "reuse" not in first.provenance.timings_s | other_dtype.provenance.timings_s
    # the host froze what its imports built (the worker inherits it), so the collection
    # between warm experiments does not walk torch and transformers again
    assert request(host.sock, {"op": "ping"})["frozen_objects"] > 50_000
    assert same_model.provenance.hardware["model"]["already_loaded"] is True
    assert same_model.config.batch_size == 2 and same_model.metrics.output_tokens > 0
    assert not other_dtype.provenance.model_already_loaded  # another dtype: loaded afresh
    # the readiness sensor between cycles asks the host to release what it keeps
    assert request(host.sock, {"op": "ping"})["worker"] is not None
    assert request(host.sock, {"op": "release"})["ok"] is True
    assert request(host.sock, {"op": "ping"})["worker"] is None
    rc, _, _ = host.run(spec(tiny_model, 9, dtype="bfloat16"), tmp_path / "after.json")
    assert rc == 0 and not read_result(tmp_path / "after.json").provenance.model_already_loaded


def test_a_timeout_kills_the_experiment_not_the_host(tiny_model, tmp_path, host_factory):
    host = host_factory("process")
    out = tmp_path / "slow.json"
    t0 = time.monotonic()
    rc, reason, _ = host.run(slow_spec(tiny_model), out, timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert rc == -9 and "timeout" in reason and not out.exists()
    assert children_of(host.proc.pid) == []
    rc, reason, _ = host.run(spec(tiny_model), tmp_path / "next.json")
    assert (rc, reason) == (0, None)


def test_a_dead_warm_worker_fails_its_experiment_and_is_replaced(tiny_model, tmp_path,
                                                                 host_factory):
    host = host_factory("warm")
    assert host.run(spec(tiny_model), tmp_path / "a.json")[0] == 0
    worker = request(host.sock, {"op": "ping"})["worker"]
    assert worker is not None
    threading.Timer(1.5, os.kill, (worker, signal.SIGKILL)).start()
    rc, reason, _ = host.run(slow_spec(tiny_model), tmp_path / "b.json")
    assert rc == -9 and "died from signal 9" in reason and not (tmp_path / "b.json").exists()
    rc, reason, _ = host.run(spec(tiny_model, 2), tmp_path / "c.json")
    assert (rc, reason) == (0, None)
    assert not read_result(tmp_path / "c.json").provenance.model_already_loaded  # reloaded
    assert request(host.sock, {"op": "ping"})["worker"] not in (None, worker)


def test_a_host_killed_mid_run_fails_the_experiment_and_leaves_nothing(tiny_model, tmp_path,
                                                                       host_factory):
    host = host_factory("process")
    running: list[int] = []

    def kill_host() -> None:
        running.extend(children_of(host.proc.pid))
        os.kill(host.proc.pid, signal.SIGKILL)

    threading.Timer(1.5, kill_host).start()
    with pytest.raises(HostError, match="died during the experiment"):
        host.run(slow_spec(tiny_model), tmp_path / "k.json")
    host.proc.wait(10)
    assert running, "no experiment child was running when the host was killed"
    deadline = time.monotonic() + 10
    while any(_exists(pid) for pid in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_exists(pid) for pid in running)  # the child died with its host
    assert not (tmp_path / "k.json").exists()
    with pytest.raises(HostError, match="no experiment host"):
        request(host.sock, {"op": "ping"})


def test_a_task_that_goes_away_kills_its_experiment(tiny_model, tmp_path, host_factory):
    import socket as so

    from llem_core.runtime.supervisor.protocol import send

    host = host_factory("process")
    conn = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    conn.connect(str(host.sock))
    send(conn, {"op": "run", "spec": slow_spec(tiny_model).model_dump_json(),
                "out": str(tmp_path / "gone.json")})
    time.sleep(2.0)
    assert children_of(host.proc.pid)  # running
    conn.close()
    deadline = time.monotonic() + 10
    while children_of(host.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children_of(host.proc.pid) == [] and not (tmp_path / "gone.json").exists()
    assert host.run(spec(tiny_model), tmp_path / "after.json")[0] == 0


def test_shutdown_removes_the_socket(tiny_model, tmp_path, host_factory):
    host = host_factory("process")
    assert request(host.sock, {"op": "shutdown"})["ok"] is True
    assert host.proc.wait(20) == 0
    assert not host.sock.exists()


def test_a_warm_host_shuts_down_with_its_worker(tiny_model, tmp_path, host_factory):
    """The host ends with os._exit (no slow interpreter shutdown): its warm worker, which
    holds the model, must have exited before, not be orphaned."""
    host = host_factory("warm")
    rc, _, _ = host.run(spec(tiny_model), tmp_path / "w.json")
    assert rc == 0
    worker = alive(host.sock)["worker"]
    assert worker and _exists(worker)
    assert request(host.sock, {"op": "shutdown"})["ok"] is True
    assert host.proc.wait(20) == 0
    assert not host.sock.exists() and not _exists(worker)


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_ping_does_not_walk_the_frozen_imports(tiny_model, host_factory):
    """Every experiment task pings its host: counting the frozen generation on each ping
    (gc.get_freeze_count() walks ~600,000 objects, ~40 ms) was paid per experiment."""
    host = host_factory("warm")
    assert request(host.sock, {"op": "ping"})["frozen_objects"] > 50_000
    took = []
    for _ in range(11):
        t0 = time.perf_counter()
        request(host.sock, {"op": "ping"})
        took.append(time.perf_counter() - t0)
    assert sorted(took)[5] < 0.015, took


def test_what_a_warm_worker_printed_is_forwarded_without_waiting():
    """A warm worker's pipe stays open between experiments: forwarding what it printed
    before its status must not wait for more (a 50 ms select per experiment before)."""
    import json

    from llem_core.runtime.supervisor.server import drain

    r, w = os.pipe()
    sent: list[dict] = []

    class Conn:
        def sendall(self, data: bytes) -> None:
            sent.extend(json.loads(line) for line in data.splitlines())

    try:
        os.write(w, b"b\nc")
        t0 = time.perf_counter()
        drain(r, Conn(), b"a")  # type: ignore[arg-type]
        for _ in range(19):
            drain(r, Conn(), b"")  # type: ignore[arg-type]
        elapsed = time.perf_counter() - t0
    finally:
        os.close(r)
        os.close(w)
    assert sent == [{"log": "ab"}, {"log": "c"}]
    assert elapsed < 0.25, elapsed
