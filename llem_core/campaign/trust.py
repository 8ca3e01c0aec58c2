"""What a campaign file may ask of the GPU servers: images, bind mounts, Docker endpoints.

Whoever can write a campaign file chooses the image every experiment runs, the host
folders mounted into it and the Docker daemon it is started on, with the worker's
rights. The deployment bounds that with allow-lists read from its environment (the same
environment for ``llem validate`` and the DAG processor, so that both agree).

Every list has one syntax: entries separated by commas, each stripped of spaces, empty
entries skipped. Unset (or the empty string) means the variable's default below. A list
that is set but names nothing (``" , "``) or holds an entry of the wrong form (a relative
path where paths are listed) is a misconfiguration: it fails closed, and every campaign
field it governs is refused with an error naming the variable and the bad entry (in
``llem validate`` and as the DAG import error). Patterns are ``fnmatch`` globs matched
case-sensitively (``*`` also crosses ``/``).

- ``LLEM_ALLOWED_IMAGES``: image globs (``llem-experiment:*,registry.lab/llem/*``);
  unset allows any image.
- ``LLEM_ALLOWED_MOUNT_ROOTS``: absolute folders (an entry with a glob character is refused as
  misconfigured); unset allows any. Every
  host path the campaign makes the worker mount (``runner.mounts[].source``,
  ``runner.model_cache``, ``results_dir``, local model folders) must lie under one;
  ``results_dir`` whatever the runner (the ``/llem`` pages serve files from it).
- ``LLEM_ALLOWED_DOCKER_URLS``: URL globs; unset allows local ``unix://`` sockets only.
- ``LLEM_ALLOWED_PYTHONS``: program globs of the interpreters the ``local`` runner may
  start (``runner.python``, and ``vllm.python`` for the engine); unset allows none but
  the worker's own (both left null).
- ``LLEM_ALLOWED_SERVER_COMMANDS``: program globs of ``server.command[0]`` a ``local``
  runner may launch as a server; unset allows none.
- ``LLEM_ALLOW_HOST_IPC``: ``1`` lets a Docker runner share the host's IPC namespace
  (``runner.ipc_mode: host``, for vLLM's tensor-parallel workers); unset refuses it.
- ``LLEM_ALLOWED_VLLM_FLAGS``: vLLM flags (``--speculative-config,-cc``) a campaign may
  pass in ``vllm.extra_args`` beyond the built-in allow-list of flags that tune what is
  measured (:mod:`llem_core.runtime.serving.vllm_flags`), with any value; unset allows the list
  only. Flags llem sets and ``--config`` cannot be allowed.
- ``LLEM_ALLOWED_ENGINE_ENV``: variable names (``NAME`` or ``PREFIX_*``) a campaign may set
  in ``vllm.env``/``server.env`` beyond the built-in list of tuning variables
  (:mod:`llem_core.runtime.serving.engine_env`); unset allows the list only. Variables that select
  GPUs or load code cannot be allowed. (Both checked by :mod:`llem_core.campaign.engine_policy`.)
- ``LLEM_ALLOWED_NOTIFY_CONNECTIONS``: Airflow connection id globs the campaign's
  ``alerts.notify`` may send through (``smtp_llem,slack_energy*``); unset allows any
  (the connection, its server and its credentials are the deployment's; a campaign
  chooses only the addressees and gets llem's fixed message).

A program glob is an absolute path (``/opt/venv*/bin/python``) or a bare name looked up
on the worker's PATH (``vllm``); an entry that is a relative path holding ``/`` is a
misconfiguration. Programs (``runner.python``, ``vllm.python``, ``server.command[0]``)
are matched the same way, once normalised (``/opt//x/./y`` is ``/opt/x/y``); a relative
``runner.python``/``vllm.python`` is relative to the campaign file (resolved before this
check); whatever a list says, a program with a ``..`` component
(``/opt/vllm/bin/../../../tmp/evil``), a relative path holding ``/``, or a ``{``/``}`` (a
placeholder, substituted after this check) is refused. (In the Docker runner these run
inside the image, which ``LLEM_ALLOWED_IMAGES`` bounds.)

Whatever the variables say, the filesystem root, the Docker socket and every folder
holding the socket are never mounted: the socket is root on the host. Nor are the host's
system folders that give root or its secrets (:mod:`llem_core.campaign.host_paths`: ``/proc``,
``/sys``, ``/dev``, ``/etc``, ``/root``, ``/boot``, ``/run``, the container engines' data;
and, unless read-only, ``/usr``, ``/bin``, ``/sbin``, ``/lib*``, ``/var/spool``).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from typing import Any

from llem_core.campaign.config import CampaignConfig, DockerRunner, LocalRunner
from llem_core.campaign.errors import FieldError
from llem_core.campaign.host_paths import host_root_problem
from llem_core.campaign.paths import field_values, local_model_paths
from llem_core.runtime.engines import engines
from llem_core.runtime.engines.base import Program

ENV_IMAGES = "LLEM_ALLOWED_IMAGES"
ENV_MOUNT_ROOTS = "LLEM_ALLOWED_MOUNT_ROOTS"
ENV_DOCKER_URLS = "LLEM_ALLOWED_DOCKER_URLS"
ENV_PYTHONS = "LLEM_ALLOWED_PYTHONS"
ENV_SERVER_COMMANDS = "LLEM_ALLOWED_SERVER_COMMANDS"
ENV_HOST_IPC = "LLEM_ALLOW_HOST_IPC"
ENV_NOTIFY_CONNECTIONS = "LLEM_ALLOWED_NOTIFY_CONNECTIONS"
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
_DEFAULT_DOCKER_URLS = ("unix://*",)


class Misconfigured(ValueError):
    """A deployment variable that cannot be read as documented: fails closed, said so."""


def allowed_entries(name: str, kind: str = "any") -> list[str] | None:
    """The entries of an allow-list variable; None when it is unset or empty (the
    variable's default). Raises :class:`Misconfigured` naming the variable and the bad
    entry when it is set but names nothing, or (``kind`` "folder" or "program") holds an
    entry that is not an absolute path or, for programs, a bare name."""
    raw = os.environ.get(name, "")
    if raw == "":
        return None
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise Misconfigured(f"{name}={raw!r} is set but lists nothing (unset it for its "
                            "default, or list the allowed entries)")
    for item in items:
        if kind == "folder" and not item.startswith("/"):
            raise Misconfigured(f"{name} entry {item!r} is not an absolute folder")
        if kind == "folder" and any(c in item for c in "*?["):
            # read literally, a glob would refuse every path without saying why
            raise Misconfigured(f"{name} entry {item!r} is a glob: list folders (every "
                                "path under one is allowed)")
        if kind == "program" and "/" in item and not item.startswith("/"):
            raise Misconfigured(f"{name} entry {item!r} is a relative path (list absolute "
                                "paths, globs of them, or bare names found on the PATH)")
    return items


def refused(exc: Misconfigured) -> str:
    return f"refused: the deployment's {exc} (a misconfigured allow-list allows nothing)"


def _forms(path: str) -> set[str]:
    """The path as written (normalised) and as it resolves on this machine (symlinks)."""
    expanded = os.path.expanduser(path)
    forms = {posixpath.normpath(expanded)}
    if os.path.isabs(expanded):
        forms.add(os.path.realpath(expanded))
    return forms


def _protected() -> set[str]:
    """The socket paths and every folder above them, as written and as resolved here."""
    out = {"/"}
    for sock in DOCKER_SOCKETS:
        for form in _forms(sock):
            p = form
            while p != "/":
                out.add(p)
                p = posixpath.dirname(p)
    return out


def _under(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def mount_problem(source: str, writable: bool = True) -> str | None:
    """Why the host path ``source`` may not be bind-mounted (``writable``: not read-only),
    or None."""
    if not os.path.isabs(os.path.expanduser(source)):
        return None  # relative paths are resolved against the campaign file first
    forms = _forms(source)
    protected = _protected()
    hit = sorted(f for f in forms if f in protected)
    if hit:
        what = "the Docker socket" if any(h.endswith(".sock") for h in hit) else (
            "the filesystem root" if "/" in hit else "a folder holding the Docker socket")
        return f"{source!r} is {what}: mounting it gives root on the host"
    system = host_root_problem(source, writable)
    if system:
        return system
    try:
        roots = allowed_entries(ENV_MOUNT_ROOTS, "folder")
    except Misconfigured as exc:
        return f"{source!r} is {refused(exc)}"
    if roots is None:
        return None
    root_forms = {f for r in roots for f in _forms(r)}
    # Both the written and the resolved path must be inside: a symlink may not lead out.
    if not all(any(_under(f, r) for r in root_forms) for f in forms):
        return f"{source!r} is not under {ENV_MOUNT_ROOTS} ({', '.join(roots)})"
    return None


def image_problem(image: str) -> str | None:
    try:
        patterns = allowed_entries(ENV_IMAGES)
    except Misconfigured as exc:
        return f"image {image!r} is {refused(exc)}"
    if patterns is None or any(fnmatch.fnmatchcase(image, p) for p in patterns):
        return None
    return f"image {image!r} is not allowed by {ENV_IMAGES} ({', '.join(patterns)})"


def docker_url_problem(url: str) -> str | None:
    try:
        patterns = allowed_entries(ENV_DOCKER_URLS)
    except Misconfigured as exc:
        return f"Docker URL {url!r} is {refused(exc)}"
    allowed = patterns or list(_DEFAULT_DOCKER_URLS)
    if any(fnmatch.fnmatchcase(url, p) for p in allowed):
        return None
    source = ENV_DOCKER_URLS if patterns else f"the default (set {ENV_DOCKER_URLS} to allow more)"
    return f"Docker URL {url!r} is not allowed by {source}: {', '.join(allowed)}"


def program_problem(program: str, what: str, variable: str, unset: str) -> str | None:
    """Why the local runner may not execute ``program`` on the worker, by the program
    allow-list ``variable`` (globs of absolute paths, or bare names), or None."""
    if "{" in program or "}" in program:
        return (f"{what} {program!r} holds '{{' or '}}': a placeholder is "
                "substituted after this check, so the program must be named literally")
    matched = program
    if "/" in program:
        if ".." in program.split("/"):
            return (f"{what} {program!r} has a '..' component: name it without one "
                    "(a '..' after a symlink leads elsewhere than it reads)")
        matched = posixpath.normpath(program)
        if not matched.startswith("/"):
            return (f"{what} {program!r} is a relative path: the folder it is "
                    "relative to is not known here; name it absolutely")
    try:
        allowed = allowed_entries(variable, "program") or []
    except Misconfigured as exc:
        return f"{what} {program!r} is {refused(exc)}"
    if any(fnmatch.fnmatchcase(matched, p) for p in allowed):
        return None
    listed = ", ".join(allowed) or f"unset: {unset}"
    return (f"the local runner would launch {what} {program!r} on the worker, which "
            f"{variable} does not allow ({listed})")


def python_problem(python: str | None) -> str | None:
    """The local runner executes ``python`` on the worker: any program the file names."""
    if python is None:
        return None
    return program_problem(python, "interpreter", ENV_PYTHONS,
                           "only the worker's own interpreter")


def server_command_problem(program: str) -> str | None:
    """The local runner executes ``program`` (``server.command[0]``) on the worker."""
    return program_problem(program, "server program", ENV_SERVER_COMMANDS, "none")


def _program_problem(program: Program, value: Any) -> str | None:
    if program.first_of_list:
        value = value[0] if isinstance(value, list) and value else None
    if not isinstance(value, str):
        return None  # the model refuses what is not a program's name
    return python_problem(value) if program.allow_list == "python" \
        else server_command_problem(value)


def launched_program_errors(cfg: CampaignConfig) -> list[FieldError]:
    """Programs a local-runner campaign would start on the worker besides llem itself: the
    fields each engine declares (``vllm.python``, ``server.command``, ...), as written, and
    a default program of an engine the campaign uses where it names none."""
    if not isinstance(cfg.runner, LocalRunner):
        return []
    errors = []
    backends = list(field_values(cfg, "backend"))
    for engine in engines().values():
        for program in engine.programs:
            written = list(field_values(cfg, f"{engine.section}.{program.field}"))
            assert engine.settings is not None
            default = engine.settings.model_fields[program.field].get_default(
                call_default_factory=True)
            if not written and default is not None:
                written = [(path, default) for path, b in backends if b == engine.name]
            for path, value in written:
                problem = _program_problem(program, value)
                if problem:
                    errors.append(FieldError(path, problem))
    return errors


def runner_policy_errors(runner: DockerRunner | LocalRunner) -> list[FieldError]:
    """Problems of the runner section alone (usable when the rest of the file is invalid)."""
    if isinstance(runner, LocalRunner):
        problem = python_problem(runner.python)
        return [FieldError("runner.python", problem)] if problem else []
    errors: list[FieldError] = []
    checks = [("runner.image", image_problem(runner.image)),
              ("runner.docker_url", docker_url_problem(runner.docker_url))]
    ipc = os.environ.get(ENV_HOST_IPC, "")
    if runner.ipc_mode == "host" and ipc != "1":
        given = f" ({ENV_HOST_IPC}={ipc!r} is not 1)" if ipc.strip() not in ("", "0") else ""
        checks.append(("runner.ipc_mode", f"the host's IPC namespace is shared only where "
                                          f"the deployment sets {ENV_HOST_IPC}=1{given}"))
    sources = [(f"runner.mounts[{i}].source", m.source, not m.read_only)
               for i, m in enumerate(runner.mounts)]
    if runner.model_cache is not None:
        sources.append(("runner.model_cache", runner.model_cache, False))
    for path, source, writable in sources:
        # Docker takes the source as written: no '~', no folder to be relative to.
        checks.append((path, mount_problem(source, writable) if source.startswith("/")
                       else f"{source!r} must be an absolute host path"))
    errors.extend(FieldError(path, reason) for path, reason in checks if reason)
    return errors


def notify_errors(cfg: CampaignConfig) -> list[FieldError]:
    """Notifier connections outside ``LLEM_ALLOWED_NOTIFY_CONNECTIONS``."""
    if cfg.alerts is None or not cfg.alerts.notify:
        return []
    try:
        allowed = allowed_entries(ENV_NOTIFY_CONNECTIONS)
    except Misconfigured as exc:
        return [FieldError("alerts.notify", refused(exc))]
    if allowed is None:
        return []
    return [FieldError(f"alerts.notify.{i}.conn_id",
                       f"connection {n.conn_id!r} is not allowed by the deployment "
                       f"({ENV_NOTIFY_CONNECTIONS}={','.join(allowed)})")
            for i, n in enumerate(cfg.alerts.notify)
            if not any(fnmatch.fnmatchcase(n.conn_id, pat) for pat in allowed)]


def policy_errors(cfg: CampaignConfig) -> list[FieldError]:
    """Everything the deployment's trust policy refuses in a campaign (empty: allowed)."""
    from llem_core.campaign.engine_policy import engine_policy_errors  # it reads the lists here

    errors = (runner_policy_errors(cfg.runner) + launched_program_errors(cfg)
              + engine_policy_errors(cfg) + notify_errors(cfg))
    # The results folder, whatever the runner: bind-mounted into every container, written
    # by every experiment, and served by the /llem pages (the file route hands out what
    # lies under <results_dir>/<campaign>), so the same roots bound it.
    problem = mount_problem(cfg.results_dir)
    if problem:
        errors.append(FieldError("results_dir", problem))
    if isinstance(cfg.runner, DockerRunner):
        # Local model folders are bind-mounted into every container.
        for path, model in local_model_paths(cfg):
            problem = mount_problem(model, writable=False)
            if problem:
                errors.append(FieldError(path, problem))
    return errors
