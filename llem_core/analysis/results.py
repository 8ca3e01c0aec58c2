"""The result of one experiment: a versioned schema, atomic writes, and where files live.

Layout of the result files (a retry rewrites its own key and nothing else)::

    <results_dir>/<campaign>/<run_id>/<config_hash>/cycle_<k>.json
"""

from __future__ import annotations

import fnmatch
import gc
import json
import os
import posixpath
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llem_core.analysis import metrics as metric_registry
from llem_core.analysis import untrusted_files as untrusted
from llem_core.campaign.config import ExperimentConfig, HealthCheck
from llem_core.campaign.loading import flatten
from llem_core.runtime.latency import Distribution
from llem_core.runtime.serving.metrics import ServingMetrics, table_columns

SCHEMA_VERSION = 1
SUMMARY_MARKER = "llem_result"
# Runners hand the spec to `llem run-experiment` in this environment variable (as data).
SPEC_ENV = "LLEM_SPEC_JSON"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class RunSpec(BaseModel):
    """What `llem run-experiment --spec` reads: a configuration and the run it belongs to.

    ``name`` and ``config_hash`` are filled from the configuration when absent (or empty):
    the configuration's name (else ``base``) and :func:`llem_core.campaign.grid.config_hash`.
    """

    model_config = ConfigDict(extra="forbid")

    campaign: str | None = None
    run_id: str | None = None
    name: str = Field("", description="Configuration name; default: config.name or 'base'.")
    config_hash: str = Field(
        "", description="Default: llem_core.campaign.grid.config_hash(config).")
    cycle: int = Field(1, ge=1)
    position: int | None = None
    config: ExperimentConfig
    health_check: HealthCheck | None = Field(
        None, description="Readiness thresholds to wait for before this experiment starts.")
    isolation: Literal["container", "process", "warm"] | None = Field(
        None, description="The campaign's execution.isolation, recorded in the result's "
        "provenance; None: run outside Airflow.")

    @model_validator(mode="after")
    def _fill_identity(self) -> RunSpec:
        from llem_core.campaign.grid import config_hash, derived_name

        if not self.name:
            self.name = self.config.name or derived_name({})
        if not self.config_hash:
            self.config_hash = config_hash(self.config)
        return self


class PerRequest(BaseModel):
    """Per-request figures of the measured window, in request order."""

    output_tokens: list[int]
    itl_count: list[int]
    ttft_s: list[float | None]
    e2e_s: list[float | None]


class Metrics(BaseModel):
    requests: int
    input_tokens: int
    output_tokens: int
    repetitions: int = Field(description="Times the workload ran inside the measured window.")
    window_s: float
    output_tokens_per_s: float
    requests_per_s: float
    ttft_s: Distribution
    tpot_s: Distribution
    itl_s: Distribution
    e2e_s: Distribution
    peak_memory_bytes: int | None
    peak_memory_source: str
    warmup_runs: int
    warmup_cv: float | None = None
    warmup_converged: bool | None = None
    per_request: PerRequest | None = None


class EnergyResult(BaseModel):
    source: str = Field(description="nvml_counter | nvml_power | rapl | none")
    note: str | None = None
    raw_j: float | None = None
    baseline_w: float | None = None
    baseline_s: float | None = None
    baseline_source: str | None = None
    baseline_temperature_c: float | None = Field(
        None, description="GPU temperature when the idle baseline was taken.")
    baseline_cache_age_s: float | None = Field(
        None, description="Age of a reused cached baseline; null when measured for this run.")
    adjusted_j: float | None = None
    raw_j_per_output_token: float | None = None
    adjusted_j_per_output_token: float | None = None
    raw_j_per_request: float | None = None
    window_s: float | None = None
    per_device_j: dict[str, float] = Field(default_factory=dict)
    polled_j: float | None = None
    counter_vs_polled_rel_diff: float | None = None
    polled_samples: int = 0
    failed_samples: int = Field(0, description="Power (or RAPL) reads that failed: skipped.")
    counter_failed_reads: int = Field(
        0, description="Energy-counter reads that failed at the window's edges (retried).")
    counter_update_period_s: float | None = None
    thermal: dict[str, Any] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)


class Provenance(BaseModel):
    llem_version: str
    host: str = Field(description="The server: $LLEM_HOST_NAME when set, else the hostname.")
    container_id: str | None = Field(
        None, description="This process's own hostname when it differs from host "
        "(in Docker: the container id).")
    platform: str
    python: str
    libraries: dict[str, str | None]
    device: str
    hardware: dict[str, Any]
    started_at: str
    finished_at: str
    timings_s: dict[str, float] = Field(
        default_factory=dict, description="Seconds per phase: import, baseline, load, warmup, "
        "window; reuse (warm, a kept model): clearing its caches and re-seeding.")
    in_container: bool = False
    isolation: str | None = Field(
        None, description="execution.isolation the experiment ran under: container (a fresh "
        "container or process), process (a fresh child of a warm host) or warm (the host "
        "kept the model); None: run outside Airflow.")
    model_already_loaded: bool = Field(
        False, description="warm: the model (or engine) was loaded by an earlier experiment; "
        "timings_s.load is then 0 and hardware.model.load_s the original load's time.")


class ExperimentResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    campaign: str | None
    run_id: str | None
    name: str
    config_hash: str
    cycle: int
    position: int | None
    config: ExperimentConfig
    metrics: Metrics
    energy: EnergyResult
    provenance: Provenance
    health: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)
    serving: ServingMetrics | None = Field(
        None, description="backend server: the load, its steady-state window and energy.")

    def summary(self, path: str | None = None) -> dict[str, Any]:
        """The compact line printed last on stdout (XCom): identity and headline numbers."""
        m, e = self.metrics, self.energy
        return {
            SUMMARY_MARKER: SCHEMA_VERSION,
            "status": "success",
            "campaign": self.campaign,
            "run_id": self.run_id,
            "name": self.name,
            "config_hash": self.config_hash,
            "cycle": self.cycle,
            "position": self.position,
            "output_tokens": m.output_tokens,
            "window_s": round(m.window_s, 6),
            "output_tokens_per_s": m.output_tokens_per_s,
            "ttft_p50_s": m.ttft_s.p50,
            "itl_p50_s": m.itl_s.p50,
            "energy_source": e.source, "energy_note": e.note,
            "raw_j": e.raw_j,
            "adjusted_j": e.adjusted_j,
            "adjusted_j_per_output_token": e.adjusted_j_per_output_token,
            "result_path": path,
        }


def safe_part(value: str) -> str:
    """A path component that cannot escape its folder (run ids hold ':' and '+')."""
    cleaned = _UNSAFE.sub("_", value).strip(".")
    return cleaned or "_"


def run_dir(results_dir: str | Path, campaign: str | None, run_id: str | None) -> Path:
    """The folder of one campaign run: its result files and its tables."""
    return Path(results_dir) / safe_part(campaign or "adhoc") / safe_part(run_id or "adhoc")


def result_path(results_dir: str | Path, campaign: str | None, run_id: str | None,
                config_hash: str, cycle: int) -> Path:
    return run_dir(results_dir, campaign, run_id) / safe_part(config_hash) / f"cycle_{cycle}.json"


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write via a temp file in the same folder and rename: readers never see half a file
    (and a link planted at ``path`` is replaced, never written through)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        # mkstemp creates 0600; results are shared with colleagues and other containers.
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a crash of the machine
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_result(result: ExperimentResult, path: str | Path) -> None:
    write_atomic(path, result.model_dump_json(indent=2))


def _no_constant(name: str) -> Any:
    """NaN/Infinity are not numbers llem writes (pydantic writes null): refuse them."""
    raise ValueError(f"not an llem result: {name} is not a measured value")


def _parse_result(raw: bytes, configs: dict[str, ExperimentConfig] | None = None
                  ) -> ExperimentResult:
    """One result document. ``configs``: configurations already validated while loading
    the same folder, by their JSON text: the cycles of a configuration repeat it exactly,
    and validating it (every campaign-text rule) is most of a result's cost."""
    data = untrusted.parse_json(raw, parse_constant=_no_constant)
    if not isinstance(data, dict):
        kind = _JSON_KIND.get(type(data), "value")
        raise ValueError(f"not an llem result: a JSON {kind}, expected an object")
    data = migrate(data)
    if configs is None or not isinstance(data.get("config"), dict):
        return ExperimentResult.model_validate(data)
    # The key is the exact JSON text (json.dumps keeps 1, 1.0 and true apart, unlike ==);
    # a configuration seen for the first time is validated inside its result, so a bad one
    # is refused with the same error path (config.<field>) as without this cache.
    key = json.dumps(data["config"])
    known = configs.get(key)
    if known is not None:
        data["config"] = known  # an instance: pydantic takes it as it is (not re-validated)
        return ExperimentResult.model_validate(data)
    result = ExperimentResult.model_validate(data)
    configs[key] = result.config
    return result


def read_result(path: str | Path, trusted: str | Path | None = None) -> ExperimentResult:
    """One result file, checked as :func:`load_results` checks it (a regular file of at
    most ``MAX_RESULT_BYTES``, a JSON object, no NaN/Infinity, a supported schema
    version); ValueError says why not, FileNotFoundError when it is absent.

    ``trusted``: a folder above ``path`` whose links are followed (default: the file's
    own folder); nothing below it is a link.
    """
    path = Path(path)
    with untrusted.open_folder(path.parent, trusted) as folder:
        raw = untrusted.read_file(folder, path.name, untrusted.MAX_RESULT_BYTES)
    return _parse_result(raw)


# -- tables ------------------------------------------------------------------------------
# Metric columns of the tidy table (column -> unit), from the metric registry.
METRIC_COLUMNS: dict[str, str] = metric_registry.units()


class LoadProblem(BaseModel):
    path: str
    reason: str


def config_columns(config: ExperimentConfig) -> dict[str, Any]:
    """The config.* columns of a tidy row: the configuration flattened."""
    return {f"config.{k}": v if not isinstance(v, list | dict) else json.dumps(v)
            for k, v in flatten(config.model_dump(mode="json")).items()}


def row_of(r: ExperimentResult, path: str | None = None,
           columns: dict[str, Any] | None = None) -> dict[str, Any]:
    """One tidy row: identity, flattened config (config.*), metrics, provenance.
    ``columns``: :func:`config_columns` of ``r.config``, when the caller has them."""
    m, e, p = r.metrics, r.energy, r.provenance
    row: dict[str, Any] = {
        "campaign": r.campaign, "run_id": r.run_id, "config_name": r.name,
        "config_hash": r.config_hash, "cycle": r.cycle, "position": r.position,
        "status": "success", "schema_version": r.schema_version,
        "energy_source": e.source,
        **{k.name: k.value_of(r) for k in metric_registry.METRICS},
        "baseline_w": e.baseline_w, "energy_window_s": e.window_s,
        "energy_flags": "; ".join(e.flags) or None,
        "output_tokens": m.output_tokens, "input_tokens": m.input_tokens,
        "requests": m.requests, "window_s": m.window_s, "repetitions": m.repetitions,
        "peak_memory_bytes": m.peak_memory_bytes,
        "device": p.device, "host": p.host, "started_at": p.started_at,
        "finished_at": p.finished_at, "llem_version": p.llem_version,
        "torch": p.libraries.get("torch"), "transformers": p.libraries.get("transformers"),
        "gpu_name": ", ".join(str(g.get("name")) for g in p.hardware.get("gpus", [])) or None,
        "driver": p.hardware.get("driver"),
        "result_path": path,
        **table_columns(r.serving),
    }
    row.update(config_columns(r.config) if columns is None else columns)
    return row


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older result document to the current schema, or raise ValueError why not."""
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version is None:
        raise ValueError("no schema_version: not an llem result file")
    raise ValueError(f"schema_version {version} is not supported by this llem "
                     f"(supports {SCHEMA_VERSION})")


_JSON_KIND = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
              type(None): "null"}


def _canonical_first(item: tuple[str, ExperimentResult]) -> tuple[bool, str]:
    """Sort key: the copy at its layout path (<hash>/cycle_<k>.json) wins, then path order."""
    path, r = item
    parent, name = posixpath.split(path)
    at_home = (name == f"cycle_{r.cycle}.json"
               and posixpath.basename(parent) == safe_part(r.config_hash))
    return (not at_home, path)


def _drop_duplicates(ok: list[tuple[str, ExperimentResult]], problems: list[LoadProblem]
                     ) -> list[tuple[str, ExperimentResult]]:
    """One sample per (campaign, run_id, config_hash, cycle): a second copy is a problem."""
    kept: dict[tuple[Any, ...], str] = {}
    out: list[tuple[str, ExperimentResult]] = []
    for path, r in sorted(ok, key=_canonical_first):
        key = (r.campaign, r.run_id, r.config_hash, r.cycle)
        if key in kept:
            problems.append(LoadProblem(path=path, reason=(
                f"duplicate of {kept[key]} (same campaign, run, configuration and cycle): "
                "not counted")))
            continue
        kept[key] = path
        out.append((path, r))
    return sorted(out, key=lambda item: item[0])


def _result_file(name: str) -> bool:
    return fnmatch.fnmatchcase(name, "cycle_*.json") or fnmatch.fnmatchcase(name, ".cycle_*.tmp")


_PAUSE = threading.Lock()
_paused = 0  # loads under way with the collector paused (threads of an api-server)
_resume = False  # whether the collector was on when the first of them paused it


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while results are parsed: parsing builds hundreds
    of thousands of objects that no cycle holds, and a collector that walks them again
    and again as they pile up was a third of the load (0.6 s of 2 s for 10,000 files).
    Nested and concurrent loads share the pause; the first restores the state it found."""
    global _paused, _resume
    with _PAUSE:
        if _paused == 0:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _PAUSE:
            _paused -= 1
            if _paused == 0 and _resume:
                gc.enable()


def load_results(root: str | Path, trusted: str | Path | None = None
                 ) -> tuple[list[tuple[str, ExperimentResult]], list[LoadProblem]]:
    """Every result JSON under ``root`` (recursively); unreadable ones are reported, not dropped.

    A file that is valid JSON but not a result object, and a second copy of a result
    already loaded (same campaign, run, configuration and cycle), are problems too. The
    folder is read as untrusted input (:mod:`llem_core.analysis.untrusted_files`): links below
    ``trusted`` (default: ``root``) are not followed and only regular files are read;
    what is refused is a problem. A missing ``root`` holds no results.
    """
    ok: list[tuple[str, ExperimentResult]] = []
    problems: list[LoadProblem] = []
    try:
        folder = untrusted.open_folder(root, trusted)
    except FileNotFoundError:
        return ok, problems
    except (OSError, ValueError) as exc:
        return ok, [LoadProblem(path=untrusted.shown(root), reason=_reason(exc))]
    with folder, _collector_paused():
        found, refused = untrusted.walk(folder, _result_file)
        problems += [LoadProblem(path=str(folder.path / rel), reason=why)
                     for rel, why in refused]
        temps = [rel for rel in found if Path(rel).name.startswith(".")]
        skip = set(temps)
        configs: dict[str, ExperimentConfig] = {}
        top = str(folder.path)
        for rel, raw in untrusted.read_files(folder, [r for r in found if r not in skip],
                                             untrusted.MAX_RESULT_BYTES):
            path = posixpath.join(top, rel)  # str(folder.path / rel), without pathlib's cost
            try:
                if isinstance(raw, BaseException):
                    raise raw
                ok.append((path, _parse_result(raw, configs)))
            except (ValueError, OSError, RecursionError) as exc:
                problems.append(LoadProblem(path=path, reason=_reason(exc)))
    ok = _drop_duplicates(ok, problems)
    for rel in temps:
        problems.append(LoadProblem(path=str(folder.path / rel),
                                    reason="half-written temp file (a crash?)"))
    return ok, problems


def _reason(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, OSError) or not exc.strerror else exc.strerror
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def to_frame(results: list[tuple[str, ExperimentResult]]):
    import pandas as pd

    # The cycles of a configuration share one config object (load_results): flatten once.
    columns: dict[int, dict[str, Any]] = {}
    rows = []
    for p, r in results:
        cols = columns.get(id(r.config))
        if cols is None:
            cols = columns[id(r.config)] = config_columns(r.config)
        rows.append(row_of(r, p, cols))
    return pd.DataFrame(rows)
