"""The experiment host: listens on a Unix socket and runs the experiments handed to it.

It imports torch, transformers and llem once, never initialises CUDA, and then serves one
request at a time (the task already holds the GPUs' locks):

- ``process``: each experiment runs in a fresh child forked from the host, so it gets its
  own CUDA context and allocator; the child ends with ``os._exit`` once its result is
  durably written.
- ``warm``: experiments run in one worker child (forked on first use) that keeps the loaded
  model between consecutive experiments with equal model settings; a worker that dies is
  replaced for the next experiment.

The child's stdout/stderr are streamed to the task as ``log`` lines; a task that goes away
(Airflow killed it) or a run past its ``timeout_s`` kills the child's process group. The
host exits on ``shutdown``, on SIGTERM, or after ``idle_exit_s`` without a request.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from llem_core.runtime.supervisor.protocol import HostError, LineReader, send

KILL_GRACE_S = 30.0  # a serving engine's stop_timeout_s fits in it
PRELOAD = ("torch", "transformers", "transformers.models.auto.modeling_auto",
           "transformers.models.llama.modeling_llama", "transformers.generation",
           "llem_core.runtime.measure", "llem_core.runtime.backends.pytorch",
           "llem_core.runtime.energy.select",
           "llem_core.runtime.serving.experiment")


def preload() -> dict[str, float]:
    """Import what every experiment imports, without touching CUDA; seconds per module.

    The collector is paused while importing and what the imports built is frozen after
    (:mod:`llem_core.runtime.experiment.import_gc`): it lives as long as the host, the collector
    never walks it again, so a warm worker's gc.collect() between experiments costs
    milliseconds, not ~0.4 s, and forked children do not touch (copy) those pages for
    collection. Children inherit that state and never freeze again."""
    import importlib

    from llem_core.runtime.experiment.import_gc import imports_paused

    out = {}
    with imports_paused():
        for name in PRELOAD:
            t0 = time.perf_counter()
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
            out[name] = time.perf_counter() - t0
    return out


def _child_main(spec_json: str, out: str, warm: Any = None) -> int:
    """Run one experiment in this (child) process; the exit status llem run-experiment has."""
    from llem_core.analysis.results import RunSpec
    from llem_core.runtime.measure import ExperimentError, run

    def log(m: str) -> None:
        print(f"[llem] {m}", file=sys.stderr, flush=True)

    try:
        spec = RunSpec.model_validate_json(spec_json)
        result = run(spec, out, log=log, warm=warm)
    except ExperimentError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr, flush=True)
        return 1
    except MemoryError:
        print("error: out of memory (host)", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:  # a bug must fail the experiment, not the host
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr, flush=True)
        return 1
    sys.stdout.write(json.dumps(result.summary(out), separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


class Host:
    def __init__(self, sock: Path, mode: str, idle_exit_s: float = 3600.0,
                 frozen_objects: int = 0) -> None:
        if mode not in ("process", "warm"):
            raise HostError(f"unknown host mode {mode!r}")
        self.sock, self.mode, self.idle_exit_s = sock, mode, idle_exit_s
        # counted once at the freeze: gc.get_freeze_count() walks the whole frozen
        # generation (~40 ms for torch + transformers), and every task pings the host
        self.frozen_objects = frozen_objects
        self.worker: _Worker | None = None
        self.stopping = False

    def serve(self) -> None:
        self.sock.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.sock.unlink()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(self.sock))
        os.chmod(self.sock, 0o600)
        srv.listen(4)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        print(f"host ready: pid {os.getpid()}, mode {self.mode}, socket {self.sock}",
              flush=True)
        last = time.monotonic()
        try:
            while not self.stopping:
                ready, _, _ = select.select([srv], [], [], 1.0)
                if not ready:
                    if time.monotonic() - last > self.idle_exit_s:
                        print("host idle: exiting", flush=True)
                        break
                    continue
                conn, _ = srv.accept()
                with conn:
                    self._handle(conn)
                last = time.monotonic()
        finally:
            if self.worker is not None:
                self.worker.close()  # a warm worker releases its model/engine and exits
            srv.close()
            with contextlib.suppress(FileNotFoundError):
                self.sock.unlink()

    def _handle(self, conn: socket.socket) -> None:
        try:
            req = LineReader(conn).next()
        except (OSError, ValueError, HostError):
            return
        if req is None:
            return
        op = req.get("op")
        try:
            if op == "ping":
                send(conn, {"ok": True, "pid": os.getpid(), "mode": self.mode,
                            "worker": self.worker.pid if self.worker else None,
                            "frozen_objects": self.frozen_objects})
            elif op == "release":
                if self.worker is not None:  # the worker exits releasing what it keeps
                    self.worker.close()
                    self.worker = None
                send(conn, {"ok": True})
            elif op == "shutdown":
                send(conn, {"ok": True})
                self.stopping = True
            elif op == "run":
                self._run(conn, str(req["spec"]), str(req["out"]), req.get("timeout_s"))
            else:
                send(conn, {"ok": False, "error": f"unknown op {op!r}"})
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _run(self, conn: socket.socket, spec: str, out: str, timeout_s: float | None) -> None:
        try:
            isolation = json.loads(spec).get("isolation")
        except (ValueError, AttributeError):
            isolation = None  # the child reports what is wrong with the spec
        if isolation not in (None, self.mode):
            # the result would record one isolation while the experiment ran under another
            send(conn, {"done": True, "rc": 1, "error": f"the run's isolation is {isolation}, "
                        f"but this host runs experiments as {self.mode}"})
            return
        if self.mode == "process":
            child = _Worker.fork_one(spec, out)
        else:
            if self.worker is None or not self.worker.alive():
                self.worker = _Worker.fork_warm()
            child = self.worker
            child.submit(spec, out)
        try:
            rc, reason = child.relay(conn, timeout_s)
        except OSError:  # the task went away while its log was being sent
            rc, reason = -15, "the task went away: experiment killed"
            child.kill()
        if self.mode == "process" or reason or rc != 0:
            # a warm worker after a failure (a broken CUDA context, say) is replaced
            child.kill()
            if child is self.worker:
                self.worker = None
        send(conn, {"done": True, "rc": rc, "error": reason})


class _Worker:
    """A forked child: its output pipe, and for a warm worker its request pipe and the
    pipe its per-experiment exit statuses come back on."""

    def __init__(self, pid: int, out_fd: int, req_fd: int | None = None,
                 status_fd: int | None = None) -> None:
        self.pid, self.out_fd, self.req_fd, self.status_fd = pid, out_fd, req_fd, status_fd
        self.exited: int | None = None

    @classmethod
    def fork_one(cls, spec: str, out: str) -> _Worker:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            _child_setup(w)
            rc = _child_main(spec, out)
            os._exit(rc)  # the result is written; skip the interpreter's slow shutdown
        os.close(w)
        _own_group(pid)
        return cls(pid, r)

    @classmethod
    def fork_warm(cls) -> _Worker:
        r, w = os.pipe()
        req_r, req_w = os.pipe()
        st_r, st_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            os.close(req_w)
            os.close(st_r)
            _child_setup(w)
            _warm_loop(req_r, st_w)
            os._exit(0)
        for fd in (w, req_r, st_w):
            os.close(fd)
        _own_group(pid)
        return cls(pid, r, req_w, st_r)

    def submit(self, spec: str, out: str) -> None:
        assert self.req_fd is not None
        data = json.dumps({"spec": spec, "out": out}).encode() + b"\n"
        os.write(self.req_fd, len(data).to_bytes(8, "big") + data)

    def alive(self) -> bool:
        if self.exited is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.exited = status
        return False

    def relay(self, conn: socket.socket, timeout_s: float | None) -> tuple[int, str | None]:
        """Stream the child's output to the task until this experiment ends: (exit status,
        reason it did not end normally or None)."""
        deadline = None if not timeout_s else time.monotonic() + float(timeout_s)
        buf = b""
        watch = [self.out_fd, conn] + ([self.status_fd] if self.status_fd is not None else [])
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(watch, [], [], wait)
            if not ready:
                self.kill()
                return -9, f"stopped: the experiment ran past its timeout of {timeout_s} s"
            if conn in ready and not conn.recv(1, socket.MSG_PEEK):
                self.kill()
                return -15, "the task went away: experiment stopped"
            if self.status_fd is not None and self.status_fd in ready:
                status = os.read(self.status_fd, 4)
                if len(status) == 4:
                    drain(self.out_fd, conn, buf)
                    return int.from_bytes(status, "big", signed=True), None
            if self.out_fd in ready:
                chunk = os.read(self.out_fd, 65536)
                if not chunk:  # the child closed its output: it exited
                    if buf:
                        send(conn, {"log": buf.decode(errors="replace")})
                    return self._exit_status()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    send(conn, {"log": line.decode(errors="replace")})

    def _exit_status(self) -> tuple[int, str | None]:
        _, status = os.waitpid(self.pid, 0)
        self.exited = status
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return -sig, (f"the experiment host's worker died from signal {sig} "
                          f"({signal.Signals(sig).name})")
        rc = os.WEXITSTATUS(status)
        if self.req_fd is not None:  # a warm worker only exits when it dies
            return rc or 1, f"the experiment host's worker exited with status {rc}"
        return rc, None

    def kill(self, grace_s: float = KILL_GRACE_S) -> None:
        """SIGTERM to the child's group (so a serving engine it started is stopped by its
        own clean-up), SIGKILL after ``grace_s``; then reap it and close its pipes."""
        if self.exited is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            self._reap(grace_s)
            if self.exited is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    _, self.exited = os.waitpid(self.pid, 0)
        self._close_fds()

    def close(self, grace_s: float = KILL_GRACE_S) -> None:
        """A warm worker: end of requests, so it releases what it keeps and exits."""
        if self.req_fd is not None and self.req_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.req_fd)
            self.req_fd = -1
            self._reap(grace_s)
        self.kill()

    def _reap(self, grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while self.exited is None and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.exited = 0
                return
            if pid:
                self.exited = status
                return
            time.sleep(0.05)

    def _close_fds(self) -> None:
        for fd in (self.out_fd, self.req_fd, self.status_fd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.out_fd = self.req_fd = self.status_fd = -1  # type: ignore[assignment]


def _own_group(pid: int) -> None:
    """Also set in the parent: a kill right after the fork must reach the child's group."""
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)


def drain(fd: int, conn: socket.socket, buf: bytes) -> None:
    """Forward what the worker printed before it reported this experiment's status.

    The worker flushes its output (Python's and C's stdio) before it writes the status, so
    everything the experiment wrote before it returned is already in the pipe: nothing to
    wait for (the pipe stays open between experiments, a timeout would be paid each time).
    Output a thread of the experiment writes after it returned shows in the next one's log.
    """
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    for line in buf.split(b"\n"):
        if line:
            send(conn, {"log": line.decode(errors="replace")})


def _child_setup(out_fd: int) -> None:  # pragma: no cover - child
    """Own process group (a SIGTERM to it reaches the experiment; a serving engine it
    started has its own group and is stopped by the experiment's clean-up), output to the
    host's pipe, and
    death with the host (a host killed mid-run leaves no experiment running)."""
    os.setpgid(0, 0)
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    os.close(out_fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _warm_loop(req_fd: int, status_fd: int) -> None:  # pragma: no cover - child
    from llem_core.runtime.supervisor.warm import WarmCache

    warm = WarmCache()
    try:
        _serve_warm(warm, req_fd, status_fd)
    finally:
        warm.release()
        warm.release_engines()


def _serve_warm(warm: Any, req_fd: int, status_fd: int) -> None:  # pragma: no cover - child
    while True:
        head = _read_exact(req_fd, 8)
        if head is None:
            return
        body = _read_exact(req_fd, int.from_bytes(head, "big"))
        if body is None:
            return
        req = json.loads(body)
        rc = _child_main(req["spec"], req["out"], warm)
        _flush_all()
        os.write(status_fd, int(rc).to_bytes(4, "big", signed=True))


def _flush_all() -> None:  # pragma: no cover - child
    """Everything this experiment printed into the output pipe, before its status: Python's
    streams and the C library's (native code printing through stdio)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)


def _read_exact(fd: int, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(sock: str, mode: str, idle_exit_s: float) -> int:
    times = preload()
    print("host preloaded: " + ", ".join(f"{k} {v:.2f}s" for k, v in times.items()),
          flush=True)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        # children forked from a process with a CUDA context cannot use CUDA
        print("error: CUDA was initialised while preloading; refusing to fork from it",
              flush=True)
        return 1
    Host(Path(sock), mode, idle_exit_s, frozen_objects=gc.get_freeze_count()).serve()
    return 0
