"""What a campaign file may ask of the GPU servers: images, bind mounts, Docker endpoints.

Whoever can write a campaign file chooses the image every experiment runs, the host
folders mounted into it and the Docker daemon it is started on, with the worker's
rights. The deployment bounds that with allow-lists read from its environment (the same
environment for ``llem validate`` and the DAG processor, so that both agree):

- ``LLEM_ALLOWED_IMAGES``: comma-separated image patterns (fnmatch globs, e.g.
  ``llem-experiment:*,registry.lab/llem/*``); unset allows any image.
- ``LLEM_ALLOWED_MOUNT_ROOTS``: comma-separated absolute folders; unset allows any.
  Every host path the campaign makes the worker mount (``runner.mounts[].source``,
  ``runner.model_cache``, ``results_dir``, local model folders) must lie under one.
- ``LLEM_ALLOWED_DOCKER_URLS``: comma-separated URL patterns; unset allows local
  ``unix://`` sockets only.
- ``LLEM_ALLOWED_PYTHONS``: comma-separated interpreters the ``local`` runner may start
  (``runner.python``, and ``vllm.python`` for the engine); unset allows none but the
  worker's own (both left null).
- ``LLEM_ALLOW_HOST_IPC``: ``1`` lets a Docker runner share the host's IPC namespace
  (``runner.ipc_mode: host``, for vLLM's tensor-parallel workers); unset refuses it.
- ``LLEM_ALLOWED_SERVER_COMMANDS``: comma-separated programs (fnmatch globs of
  ``server.command[0]``) a ``local`` runner may launch as a server; unset allows none.
  The program is matched once normalised (``/opt//x/./y`` is ``/opt/x/y``); whatever the
  list says, one with a ``..`` component (``/opt/vllm/bin/../../../tmp/evil``), a relative
  path holding ``/``, or a ``{``/``}`` (a placeholder, substituted after this check) is
  refused. (In the Docker runner these run inside the image, which ``LLEM_ALLOWED_IMAGES``
  bounds.)

Whatever the variables say, the filesystem root, the Docker socket and every folder
holding the socket are never mounted: the socket is root on the host.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath

from llem_core.campaign_paths import field_values, local_model_paths
from llem_core.config import CampaignConfig, DockerRunner, LocalRunner
from llem_core.errors import FieldError

ENV_IMAGES = "LLEM_ALLOWED_IMAGES"
ENV_MOUNT_ROOTS = "LLEM_ALLOWED_MOUNT_ROOTS"
ENV_DOCKER_URLS = "LLEM_ALLOWED_DOCKER_URLS"
ENV_PYTHONS = "LLEM_ALLOWED_PYTHONS"
ENV_SERVER_COMMANDS = "LLEM_ALLOWED_SERVER_COMMANDS"
ENV_HOST_IPC = "LLEM_ALLOW_HOST_IPC"
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
_DEFAULT_DOCKER_URLS = ("unix://*",)


def _allowed(name: str) -> list[str] | None:
    """The comma-separated entries of an environment variable; None when it is unset/empty."""
    raw = os.environ.get(name, "")
    items = [item.strip() for item in raw.split(",") if item.strip()]
    return items or None


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


def mount_problem(source: str) -> str | None:
    """Why the host path ``source`` may not be bind-mounted, or None."""
    if not os.path.isabs(os.path.expanduser(source)):
        return None  # relative paths are resolved against the campaign file first
    forms = _forms(source)
    protected = _protected()
    hit = sorted(f for f in forms if f in protected)
    if hit:
        what = "the Docker socket" if any(h.endswith(".sock") for h in hit) else (
            "the filesystem root" if "/" in hit else "a folder holding the Docker socket")
        return f"{source!r} is {what}: mounting it gives root on the host"
    roots = _allowed(ENV_MOUNT_ROOTS)
    if roots is None:
        return None
    root_forms = {f for r in roots for f in _forms(r)}
    # Both the written and the resolved path must be inside: a symlink may not lead out.
    if not all(any(_under(f, r) for r in root_forms) for f in forms):
        return f"{source!r} is not under {ENV_MOUNT_ROOTS} ({', '.join(roots)})"
    return None


def image_problem(image: str) -> str | None:
    patterns = _allowed(ENV_IMAGES)
    if patterns is None or any(fnmatch.fnmatchcase(image, p) for p in patterns):
        return None
    return f"image {image!r} is not allowed by {ENV_IMAGES} ({', '.join(patterns)})"


def docker_url_problem(url: str) -> str | None:
    patterns = _allowed(ENV_DOCKER_URLS)
    allowed = patterns or list(_DEFAULT_DOCKER_URLS)
    if any(fnmatch.fnmatchcase(url, p) for p in allowed):
        return None
    source = ENV_DOCKER_URLS if patterns else f"the default (set {ENV_DOCKER_URLS} to allow more)"
    return f"Docker URL {url!r} is not allowed by {source}: {', '.join(allowed)}"


def python_problem(python: str | None) -> str | None:
    """The local runner executes ``python`` on the worker: any program the file names."""
    allowed = _allowed(ENV_PYTHONS) or []
    if python is None or python in allowed:
        return None
    listed = ", ".join(allowed) or "unset: only the worker's own interpreter"
    return f"interpreter {python!r} is not allowed by {ENV_PYTHONS} ({listed})"


def server_command_problem(program: str) -> str | None:
    """The local runner executes ``program`` (``server.command[0]``) on the worker."""
    if "{" in program or "}" in program:
        return (f"server program {program!r} holds '{{' or '}}': a placeholder is "
                "substituted after this check, so the program must be named literally")
    matched = program
    if "/" in program:
        if ".." in program.split("/"):
            return (f"server program {program!r} has a '..' component: name it without one "
                    "(a '..' after a symlink leads elsewhere than it reads)")
        matched = posixpath.normpath(program)
        if not matched.startswith("/"):
            return (f"server program {program!r} is a relative path: the folder it is "
                    "relative to is not known here; name it absolutely")
    allowed = _allowed(ENV_SERVER_COMMANDS) or []
    if any(fnmatch.fnmatchcase(matched, p) for p in allowed):
        return None
    listed = ", ".join(allowed) or "unset: none"
    return (f"the local runner would launch {program!r} on the worker, which "
            f"{ENV_SERVER_COMMANDS} does not allow ({listed})")


def launched_program_errors(cfg: CampaignConfig) -> list[FieldError]:
    """Programs a local-runner campaign would start on the worker besides llem itself."""
    if not isinstance(cfg.runner, LocalRunner):
        return []
    errors = []
    for path, value in field_values(cfg, "vllm.python"):
        problem = python_problem(value) if isinstance(value, str) or value is None else None
        if problem:
            errors.append(FieldError(path, problem))
    for path, value in field_values(cfg, "server.command"):
        if isinstance(value, list) and value and isinstance(value[0], str):
            problem = server_command_problem(value[0])
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
    if runner.ipc_mode == "host" and os.environ.get(ENV_HOST_IPC) != "1":
        checks.append(("runner.ipc_mode", f"the host's IPC namespace is shared only where "
                                          f"the deployment sets {ENV_HOST_IPC}=1"))
    sources = [(f"runner.mounts[{i}].source", m.source) for i, m in enumerate(runner.mounts)]
    if runner.model_cache is not None:
        sources.append(("runner.model_cache", runner.model_cache))
    for path, source in sources:
        # Docker takes the source as written: no '~', no folder to be relative to.
        checks.append((path, mount_problem(source) if source.startswith("/")
                       else f"{source!r} must be an absolute host path"))
    errors.extend(FieldError(path, reason) for path, reason in checks if reason)
    return errors


def policy_errors(cfg: CampaignConfig) -> list[FieldError]:
    """Everything the deployment's trust policy refuses in a campaign (empty: allowed)."""
    errors = runner_policy_errors(cfg.runner) + launched_program_errors(cfg)
    if isinstance(cfg.runner, DockerRunner):
        # The results folder and local model folders are bind-mounted into every container.
        problem = mount_problem(cfg.results_dir)
        if problem:
            errors.append(FieldError("results_dir", problem))
        for path, model in local_model_paths(cfg):
            problem = mount_problem(model)
            if problem:
                errors.append(FieldError(path, problem))
    return errors
