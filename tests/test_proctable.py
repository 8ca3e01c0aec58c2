"""Exited processes that nobody has reaped yet (zombies) count as stopped.

The zombies here are made deterministic: their parent is a process that never reaps, or
a subreaper that does not, instead of whatever init the machine has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llem_core.runtime.proctable import group_running, running

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# forks a child that exits at once, prints its pid, and never reaps it
NO_REAPER = ("import os, sys, time\n"
             "pid = os.fork()\n"
             "if pid == 0:\n    os._exit(0)\n"
             "print(pid, flush=True)\ntime.sleep(60)\n")


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def run_py(code: str) -> dict:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def zombie():
    parent = subprocess.Popen([sys.executable, "-c", NO_REAPER], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        pid = int(parent.stdout.readline())
        for _ in range(500):
            if state(pid) == "Z":
                break
            time.sleep(0.02)
        yield pid, parent
    finally:
        parent.kill()
        parent.wait()


def test_a_zombie_is_not_running_though_kill_0_finds_it(zombie):
    pid, parent = zombie
    assert state(pid) == "Z"
    os.kill(pid, 0)  # the check this replaces: it succeeds for a zombie
    assert running(pid) is False
    assert running(parent.pid) is True
    assert running(os.getpid()) is True


def test_a_process_whose_leader_thread_exited_still_runs():
    """/proc shows its state as Z, but its other thread runs (and may hold a GPU)."""
    code = ("import ctypes, threading, time\n"
            "threading.Thread(target=time.sleep, args=(60,)).start()\n"
            "print('up', flush=True)\nctypes.CDLL(None).pthread_exit(None)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "up"
        for _ in range(500):
            if state(p.pid) == "Z":
                break
            time.sleep(0.02)
        assert state(p.pid) == "Z"
        assert running(p.pid) is True
        assert group_running(p.pid) is True
    finally:
        p.kill()
        p.wait()


def test_a_group_of_only_zombies_is_not_running():
    """The group's leader exited and was reaped; its child, orphaned to a subreaper that
    never reaps, is a zombie: killpg(pgid, 0) still finds it, the group does not run."""
    out = run_py("""
        import ctypes, json, os, subprocess, sys, time
        ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
        from llem_core.runtime.proctable import group_running
        # the child blocks on the stdin it shares with us until we close it
        leader = subprocess.Popen([sys.executable, "-c",
            "import os, sys\\npid = os.fork()\\nif pid == 0:\\n    os.read(0, 1)\\n"
            "    os._exit(0)\\nprint(pid, flush=True)\\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        child = int(leader.stdout.readline())
        leader.wait()
        before = group_running(leader.pid)
        leader.stdin.close()
        def state():
            return open(f"/proc/{child}/stat").read().rpartition(")")[2].split()[0]
        deadline = time.monotonic() + 10
        while state() != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(leader.pid, 0)  # the zombie is there: the check this replaces finds it
        print(json.dumps({"before": before, "zombie": state() == "Z",
                          "after": group_running(leader.pid)}))
    """)
    assert out == {"before": True, "zombie": True, "after": False}


def test_a_process_that_does_not_exist_is_not_running():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert running(p.pid) is False
    assert group_running(p.pid) is False


def test_a_host_that_exited_unreaped_is_gone_at_once(zombie):
    """host_stop waited for init to collect an exited host: ~2 s on a VM whose init reaps
    late, every run."""
    from llem_airflow.host_tasks import wait_gone

    pid, _ = zombie
    t0 = time.monotonic()
    assert wait_gone(pid, 5.0) is True
    assert time.monotonic() - t0 < 1.0


def test_a_server_whose_worker_outlives_its_leader_stops_without_waiting_for_a_reaper(tmp_path):
    """An engine's leader exits on SIGTERM and its worker a moment later, orphaned; where
    the reaper is llem (a container's PID 1) the worker stays a zombie: stop() used to wait
    its whole grace period for the group to empty, then 5 s more."""
    script = textwrap.dedent("""
        import ctypes, json, sys, time
        ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans come to us, unreaped
        from pathlib import Path
        from llem_core.runtime.serving.process import ServerProcess
        leader = ("import os, signal, sys, time\\n"
                  "if os.fork() == 0:\\n"
                  "    signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), os._exit(0)))\\n"
                  "    time.sleep(60)\\n    os._exit(0)\\n"
                  "print('up', flush=True)\\ntime.sleep(60)\\n")
        log = Path(sys.argv[1])
        s = ServerProcess([sys.executable, "-c", leader], log, stop_timeout_s=8.0)
        for _ in range(200):
            if log.exists() and "up" in log.read_text():
                break
            time.sleep(0.05)
        time.sleep(0.2)
        t0 = time.monotonic()
        s.stop()
        print(json.dumps({"stop_s": time.monotonic() - t0, "alive": s.group_alive()}))
    """)
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path / "server.log")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["alive"] is False
    assert out["stop_s"] < 3.0, out  # the worker's own 0.3 s, not the 8 s grace
