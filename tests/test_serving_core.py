"""Unit tests of llem_core.runtime.serving: config rules, arrival schedules, the steady-state
window,
energy attribution (exact identity, and a simulated meter with a known power trace), the
Prometheus parser and the process group handling (with real processes)."""

from __future__ import annotations

import itertools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from llem_core.campaign.config import ExperimentConfig
from llem_core.campaign.grid import config_hash, conflicts
from llem_core.runtime.energy.base import EnergyReading
from llem_core.runtime.engines.settings import LoadSettings, ServerSettings
from llem_core.runtime.serving.attribution import attribute, snap, window_attribution
from llem_core.runtime.serving.client import RequestRecord, record_chunk, request_body
from llem_core.runtime.serving.load import arrival_offsets
from llem_core.runtime.serving.process import ServerError, ServerProcess, free_port
from llem_core.runtime.serving.prometheus import parse_gauges
from llem_core.runtime.serving.summary import tokens_between
from llem_core.runtime.serving.window import steady_window, target_occupancy


class LinearPowerMeter:
    """A simulated meter whose power is known exactly: P(t) = 100 + 10 t watts."""

    source = "simulated"

    def hardware(self) -> dict[str, object]:
        return {"meter": "simulated"}

    def mark(self) -> float:
        return time.monotonic()

    def reading(self, a: float, b: float) -> EnergyReading:
        return EnergyReading(source=self.source, joules=100 * (b - a) + 5 * (b * b - a * a),
                             window_s=b - a)

    def close(self) -> None:
        pass


def server_cfg(**over: object) -> ExperimentConfig:
    base: dict[str, object] = {"model": "/m", "backend": "server",
                               "server": {"url": "http://127.0.0.1:9"},
                               "load": {"pattern": "rate", "rate": 2.0}}
    return ExperimentConfig(**{**base, **over})


# --- config and grid rules -------------------------------------------------------------

def test_server_backend_valid_and_an_unknown_engine_refused() -> None:
    assert conflicts(server_cfg()) == []
    # the old placeholder name: TensorRT-LLM is the registered engine trtllm
    with pytest.raises(ValidationError, match="backend 'tensorrt' is not an engine llem knows"):
        ExperimentConfig(model="/m", backend="tensorrt")


def test_hash_of_a_config_without_serving_sections_is_unchanged() -> None:
    cfg = ExperimentConfig(model="/m")
    assert "server" not in cfg.model_dump() and "load" not in cfg.model_dump()
    assert config_hash(cfg) == config_hash(ExperimentConfig.model_validate(cfg.model_dump()))
    with_load = server_cfg()
    assert ExperimentConfig.model_validate(with_load.model_dump()) == with_load


@pytest.mark.parametrize(("over", "reason"), [
    ({"server": None}, "needs a server section"),
    ({"load": None}, "needs a load section"),
    ({"server": {"url": "http://127.0.0.1:9", "command": ["x"]}}, "exactly one of"),
    ({"load": {"pattern": "rate"}}, "load.pattern rate needs load.rate"),
    ({"load": {"pattern": "concurrency"}}, "needs load.concurrency"),
    ({"load": {"pattern": "burst", "rate": 3}}, "load.rate is set but load.pattern is burst"),
    ({"load": {"pattern": "rate", "rate": 1, "burstiness": 0.5}}, "needs load.arrival gamma"),
    ({"backend": "pytorch"}, "server is set but backend is pytorch"),
])
def test_conflicts(over: dict[str, object], reason: str) -> None:
    assert any(reason in p for p in conflicts(server_cfg(**over))), conflicts(server_cfg(**over))


def test_field_errors() -> None:
    with pytest.raises(ValidationError, match="must start with '/'"):
        ServerSettings(url="http://127.0.0.1:1", health_path="health")
    with pytest.raises(ValidationError, match="not an http"):
        ServerSettings(url="127.0.0.1:1")


def test_request_body_fixed_length_styles() -> None:
    vllm = request_body(ServerSettings(url="http://x"), "m", "hi", 7, True, 0.0)
    assert vllm["ignore_eos"] is True and vllm["min_tokens"] == 7 and vllm["max_tokens"] == 7
    assert vllm["stream"] is True and vllm["stream_options"] == {"include_usage": True}
    hf = request_body(ServerSettings(url="http://x", fixed_length="generation_config",
                                     endpoint="chat"), "m", "hi", 7, True, 0.0)
    assert '"min_new_tokens": 7' in hf["generation_config"] and "ignore_eos" not in hf
    assert hf["messages"] == [{"role": "user", "content": "hi"}]
    free = request_body(ServerSettings(url="http://x"), "m", "hi", 7, False, 0.0)
    assert "ignore_eos" not in free and "generation_config" not in free


# --- arrival schedules -----------------------------------------------------------------

def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    load = LoadSettings(pattern="rate", rate=5.0, arrival="gamma", burstiness=0.5, seed=3)
    a, b = arrival_offsets(load, 50), arrival_offsets(load, 50)
    c = arrival_offsets(load.model_copy(update={"seed": 4}), 50)
    assert a == b and a != c and a is not None and a[0] == 0.0
    assert all(y >= x for x, y in itertools.pairwise(a))


def test_rate_has_the_asked_mean_and_burstiness_changes_dispersion() -> None:
    n = 20_000
    poisson = np.diff(arrival_offsets(LoadSettings(pattern="rate", rate=4.0), n))
    bursty = np.diff(arrival_offsets(LoadSettings(pattern="rate", rate=4.0, arrival="gamma",
                                                  burstiness=0.25), n))
    assert poisson.mean() == pytest.approx(0.25, rel=0.05)
    assert bursty.mean() == pytest.approx(0.25, rel=0.1)
    # coefficient of variation of gamma gaps is 1/sqrt(shape): 1 for Poisson, 2 for 0.25
    assert poisson.std() / poisson.mean() == pytest.approx(1.0, rel=0.05)
    assert bursty.std() / bursty.mean() == pytest.approx(2.0, rel=0.1)


def test_burst_and_concurrency_schedules() -> None:
    assert arrival_offsets(LoadSettings(pattern="burst"), 4) == [0.0] * 4
    assert arrival_offsets(LoadSettings(pattern="concurrency", concurrency=2), 4) is None


# --- the steady-state window -----------------------------------------------------------

def rec(i: int, submitted: float, first: float, done: float, tokens: int = 4) -> RequestRecord:
    times = list(np.linspace(first, done, tokens))
    return RequestRecord(index=i, submitted=submitted, event_times=times,
                         content_times=times, token_times=times, done=done,
                         usage_completion_tokens=tokens)


def test_ml_energy_window_for_a_burst() -> None:
    # 6 requests, capacity 2: requests run two by two: [0,2], [2,4], [4,6]; the second of
    # each pair ends 0.01 s after the first, so every completion has its own time
    recs = [rec(i, 0.0, 2 * (i // 2) + 0.1 * (i % 2), 2 * (i // 2) + 2 + 0.01 * (i % 2))
            for i in range(6)]
    k, source = target_occupancy(LoadSettings(pattern="burst"),
                                 ServerSettings(url="http://x", max_num_seqs=2), 6)
    assert (k, source) == (2, "server.max_num_seqs")
    w = steady_window(recs, k, source, 0.0, 6.0, 1.0, 0.5)
    # starts at the 2nd first token, ends at the (6-2-1)=3rd completion (ML.ENERGY's
    # RequestTracker: num_requests - max_num_seqs - 1), not the 4th (4.01)
    assert w.start == pytest.approx(0.1) and w.end == pytest.approx(4.0)
    assert w.occupancy_max == 2 and w.fill_fraction > 0.9 and w.flags == []


def test_window_flags_short_and_unfilled_and_empty() -> None:
    serial = [rec(i, 0.0, float(i), i + 1.0) for i in range(6)]
    w = steady_window(serial, 2, "x", 0.0, 6.0, 30.0, 0.5)
    assert any("shorter than load.min_window_s=30" in f for f in w.flags)
    assert any("the batch never filled" in f for f in w.flags)
    empty = steady_window(serial[:2], 2, "x", 0.0, 2.0, 0.0, 0.5)
    assert empty.start is None and "no steady-state window" in empty.flags[0]


def test_target_estimated_for_rate_loads() -> None:
    recs = [rec(i, i * 0.5, i * 0.5 + 0.1, i * 0.5 + 1.6) for i in range(20)]  # 3 at a time
    k, source = target_occupancy(LoadSettings(pattern="rate", rate=2.0),
                                 ServerSettings(url="http://x", max_num_seqs=8), 20)
    assert (k, source) == (None, "estimated")
    w = steady_window(recs, k, source, 0.0, 11.1, 0.0, 0.5)
    assert w.target == 3 and w.start is not None and w.end is not None


# --- attribution -----------------------------------------------------------------------

def test_attribution_is_proportional_and_sums_exactly() -> None:
    times = [0.5, 1.5, 1.6, 1.7]
    a = RequestRecord(0, submitted=0.0, content_times=times, token_times=times, done=2.0)
    b = RequestRecord(1, submitted=0.0, content_times=[1.2], token_times=[1.2], done=3.5)
    c = RequestRecord(2, submitted=5.0, content_times=[5.5], token_times=[5.5], done=5.6)
    bounds = [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 5.0), (5.0, 6.0)]
    joules = [10.0, 40.0, 7.0, 3.0, 2.5, 1.1]
    att = attribute(bounds, joules, [a, b, c])
    # (1,2]: a has 3 tokens, b one -> 30/10; (2,3] no tokens, b in flight -> b
    assert att.per_request_j == pytest.approx([10.0 + 30.0, 10.0 + 7.0 + 3.0, 1.1])
    assert att.unattributed_j == 2.5  # (4,5]: nobody in flight
    assert math.fsum(att.per_request_j) + att.unattributed_j == math.fsum(joules)


def test_attribution_with_a_known_power_trace_sums_to_the_window() -> None:
    meter = LinearPowerMeter()
    marks = [(t, t) for t in np.arange(0.0, 10.01, 0.25)]
    rng = np.random.default_rng(0)
    recs = []
    for i in range(12):
        start = float(rng.uniform(0, 6))
        times = sorted(rng.uniform(start, start + 4, 20).tolist())
        recs.append(RequestRecord(i, submitted=start, content_times=times, token_times=times,
                                  event_times=times, done=times[-1]))
    edges = snap(marks, 1.1, 8.9)
    assert edges is not None
    i0, i1 = edges
    assert marks[i0][0] == 1.25 and marks[i1][0] == 8.75
    att = window_attribution(meter, marks, i0, i1, recs)
    assert not isinstance(att, str)
    window_j = meter.reading(marks[i0][1], marks[i1][1]).joules
    # P(t) = 100 + 10 t over [1.25, 8.75]: 750 + 5 (8.75^2 - 1.25^2) = 1125 J exactly
    assert window_j == pytest.approx(1125.0)
    assert att.total_j == pytest.approx(window_j, rel=1e-12)
    assert all(j >= 0 for j in att.per_request_j)


def test_unmeasured_interval_gives_no_attribution() -> None:
    class Null(LinearPowerMeter):
        def reading(self, a: float, b: float) -> EnergyReading:
            return EnergyReading(source="none", joules=None, window_s=b - a, note="no meter")

    assert window_attribution(Null(), [(0.0, 0.0), (1.0, 1.0)], 0, 1, []) \
        == "interval energy unmeasured: no meter"


# --- client chunk parsing and gauges ---------------------------------------------------

def test_chunks_events_content_and_usage() -> None:
    r = RequestRecord(0)
    record_chunk(r, {"choices": [{"text": "a"}]}, 1.0, chat=False)
    record_chunk(r, {"choices": [{"text": ""}]}, 2.0, chat=False)
    record_chunk(r, {"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}]},
                  3.0, chat=True)
    record_chunk(r, {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
                  4.0, chat=False)
    assert r.event_times == [1.0, 2.0, 3.0] and r.content_times == [1.0, 3.0]
    assert r.token_times == [1.0, 3.0]  # no token ids: one token per chunk with text
    assert (r.usage_prompt_tokens, r.usage_completion_tokens) == (5, 2)
    assert r.finish_reason == "length"


def test_chunks_with_token_ids_count_every_token() -> None:
    # vLLM coalesces a lagging stream: one chunk then carries several tokens, and a token
    # whose bytes are an incomplete character arrives with no text at all
    r = RequestRecord(0)
    record_chunk(r, {"choices": [{"text": "a", "token_ids": [5]}]}, 1.0, chat=False)
    record_chunk(r, {"choices": [{"text": "bc", "token_ids": [6, 7]}]}, 2.0, chat=False)
    record_chunk(r, {"choices": [{"text": "", "token_ids": [8]}]}, 3.0, chat=False)
    record_chunk(r, {"choices": [{"delta": {"content": "d", "token_ids": [9]}}]}, 4.0,
                  chat=True)
    assert r.token_times == [1.0, 2.0, 2.0, 3.0, 4.0] and r.content_times == [1.0, 2.0, 4.0]
    assert tokens_between([r], 1.5, 3.0) == 3
    body = request_body(ServerSettings(url="http://x", token_ids=True), "m", "hi", 4, True, 0.0)
    assert body["return_token_ids"] is True
    assert "return_token_ids" not in request_body(ServerSettings(url="http://x"), "m", "hi", 4,
                                                  True, 0.0)


def test_parse_vllm_gauges() -> None:
    text = ("# HELP vllm:num_requests_running x\n"
            'vllm:num_requests_running{engine="0",model_name="m"} 7.0\n'
            'vllm:num_requests_waiting{engine="0",model_name="m"} 2.0\n'
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.43\n'
            'vllm:prompt_tokens_total{model_name="m"} 100.0\n')
    assert parse_gauges(text) == {"running": 7.0, "waiting": 2.0, "kv_cache": 0.43}


# --- the server's process group --------------------------------------------------------

def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


SPAWN = ("import subprocess, sys, time; "
         "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
         "print(c.pid, flush=True); time.sleep(120)")
STUBBORN = ("import signal, subprocess, sys, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "c = subprocess.Popen([sys.executable, '-c', "
            "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "time.sleep(120)']); print(c.pid, flush=True); time.sleep(120)")


def child_pid(log: Path) -> int:
    for _ in range(200):
        text = log.read_text().strip() if log.exists() else ""
        if text:
            return int(text.split()[0])
        time.sleep(0.05)
    raise AssertionError("child never started")


@pytest.mark.slow  # real processes and their stop timeouts
@pytest.mark.parametrize("code", [SPAWN, STUBBORN])
def test_stop_kills_the_whole_group_even_after_an_error(tmp_path: Path, code: str) -> None:
    log = tmp_path / "s.log"
    with pytest.raises(RuntimeError, match="boom"), \
            ServerProcess([sys.executable, "-c", code], log, stop_timeout_s=1.0) as proc:
        child = child_pid(log)
        assert alive(proc.pid) and alive(child)
        raise RuntimeError("boom")
    assert not proc.group_alive() and not alive(child)


@pytest.mark.slow  # waits out its own timeout
def test_never_healthy_fails_within_its_timeout_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    with ServerProcess([sys.executable, "-c", "import time; time.sleep(60)"],
                       tmp_path / "s.log", stop_timeout_s=2.0) as proc:
        t0 = time.monotonic()
        with pytest.raises(ServerError) as err:
            proc.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=1.5, poll_s=0.2)
        assert time.monotonic() - t0 < 4.0
    msg = str(err.value)
    assert "\n" not in msg and "not healthy" in msg and "1.5 s" in msg
    assert not proc.group_alive()


def test_server_that_exits_reports_its_code_and_log(tmp_path: Path) -> None:
    code = "import sys; print('no such model: /x', flush=True); sys.exit(3)"
    with ServerProcess([sys.executable, "-c", code], tmp_path / "s.log") as proc, \
            pytest.raises(ServerError, match=r"exited with code 3 .*no such model: /x"):
        proc.wait_healthy(f"http://127.0.0.1:{free_port()}/health", timeout_s=30)


def test_command_not_found_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="could not start"):
        ServerProcess(["/nonexistent/server-binary"], tmp_path / "s.log")


def test_fixed_output_silences_the_eos_warning() -> None:
    from llem_core.campaign.grid import soft_warnings

    eos = "output length varies with EOS"
    assert not any(eos in w for w in soft_warnings(server_cfg()))
    free = server_cfg(load={"pattern": "rate", "rate": 2.0, "fixed_output": False})
    assert any(eos in w for w in soft_warnings(free))


PARENT = """
import sys, time
from pathlib import Path
from llem_core.runtime.serving.process import ServerProcess, terminate_as_exception
log = Path(sys.argv[1])
try:
    with terminate_as_exception(), ServerProcess([sys.executable, '-c', sys.argv[2]], log,
                                                 stop_timeout_s=1.0):
        time.sleep(120)
except BaseException as exc:
    print(type(exc).__name__, flush=True)
    raise
"""


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    log = tmp_path / "s.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(log), SPAWN],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return parent, child_pid(log)


@pytest.mark.slow  # real processes and signals
def test_sigterm_to_llem_stops_the_server_group(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    parent.send_signal(signal.SIGTERM)
    out, _ = parent.communicate(timeout=30)
    assert "Terminated" in out and parent.returncode != 0
    for _ in range(100):
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child)


def test_sigkill_to_llem_terminates_the_server_leader(tmp_path: Path) -> None:
    parent, child = _start_parent(tmp_path)
    leader = int(subprocess.check_output(["ps", "-o", "ppid=", "-p", str(child)]).strip())
    parent.kill()
    parent.wait(timeout=10)
    for _ in range(100):
        if not alive(leader):
            break
        time.sleep(0.05)
    assert not alive(leader)  # PR_SET_PDEATHSIG; its own children are its business
    os.kill(child, signal.SIGKILL)


def test_bodies_reuse_prompts_in_order_and_warm_up_on_other_prompts() -> None:
    from llem_core.runtime.serving.experiment import bodies_for

    cfg = server_cfg(prompts={"count": 3, "length": 8},
                     load={"pattern": "burst", "num_requests": 7, "warmup_requests": 2})
    bodies, warm = bodies_for(cfg, cfg.server, cfg.load)
    prompts = [b["prompt"] for b in bodies]
    assert len(prompts) == 7 and prompts[3:6] == prompts[:3] and len(set(prompts)) == 3
    assert len(warm) == 2 and not {w["prompt"] for w in warm} & set(prompts)


def test_usage_mismatch_and_unhonoured_fixed_length_are_flagged() -> None:
    from llem_core.runtime.serving.experiment import token_checks
    from llem_core.runtime.serving.metrics import EnergySpan, ServingMetrics, SteadyState

    def serving() -> ServingMetrics:
        return ServingMetrics(url="u", launched=False, pattern="burst", num_requests=2,
                              load_s=1.0, whole_load=EnergySpan(),
                              steady_state=SteadyState(start_s=None, end_s=None, seconds=0,
                                                       target_occupancy=1, target_source="x"),
                              fixed_output_requested=True)

    ok = [rec(0, 0.0, 0.1, 1.0, tokens=4), rec(1, 0.0, 0.1, 1.0, tokens=4)]
    s, flags = serving(), []
    token_checks(s, ok, 4, flags)
    assert flags == [] and s.fixed_output_honoured is True and s.token_mismatches == 0
    bad = [rec(0, 0.0, 0.1, 1.0, tokens=4), rec(1, 0.0, 0.1, 1.0, tokens=3)]
    bad[1].usage_completion_tokens = 4  # the engine says 4, the client received 3
    bad[0].usage_completion_tokens = 2
    s, flags = serving(), []
    token_checks(s, bad, 4, flags)
    assert s.token_mismatches == 2 and s.fixed_output_honoured is False
    assert any("differ from the tokens received" in f for f in flags)
    assert any("not honoured" in f for f in flags)
    bad[0].usage_completion_tokens = None
    s, flags = serving(), []
    token_checks(s, bad, 4, flags)
    assert s.usage_missing == 1 and s.fixed_output_honoured is None
