"""The engine arguments a campaign may add to the vLLM server llem launches
(``vllm.extra_args``), read as vLLM reads its argv.

Two rules. Flags llem sets from the experiment (model, port, batch limit, dtype, ...) are
refused in every spelling vLLM accepts (:func:`vllm_flag_problem`, a model rule: the
record must say what ran). And only an allow-list of flags that tune what is measured may
be passed at all (:func:`vllm_args_problem`, applied by :mod:`llem_core.campaign.trust` with the
deployment's additions): a deny-list of code-loading flags missed new ones twice, and
vLLM's JSON-valued settings (``--compilation-config '{"backend": "pkg.mod"}'``,
``-cc.backend=pkg.mod``) name modules that it imports.

How vLLM reads argv (``FlexibleArgumentParser``): '_' is '-' in a long flag's name (up to
its first '.'); ``--flag.key value`` and ``-s.key=value`` set one key of a JSON-valued
flag; ``-O3`` is ``--optimization-level 3``; ``--config file`` reads more arguments from a
file; argparse then takes an exact flag first, else any unambiguous prefix of a long one,
and a value token may begin with '-' when it is a negative number. So here a flag must be
written in full (a prefix is refused, whatever it would abbreviate), a dotted name is
refused, every value of a listed flag is checked against what that flag takes, and a token
that is no flag's value is refused (vLLM would read it as the positional model).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

# Flags llem sets itself from the experiment (model, port, host, batch limit, dtype, ...):
# an extra_args entry naming one would silently contradict the recorded configuration.
VLLM_OWNED_FLAGS = frozenset({
    "--model", "--port", "--host", "--served-model-name", "--max-num-seqs", "--max-model-len",
    "--gpu-memory-utilization", "--device-memory-utilization", "--tensor-parallel-size",
    "-tp", "--enforce-eager", "--dtype", "--kv-cache-dtype", "--quantization", "-q", "--seed",
    "--uds",
})
_OWNED = ("is set by llem from the experiment's fields (use the vllm.* field or the "
          "experiment field instead)")
_REFUSED_LONG = {
    **{f: _OWNED for f in VLLM_OWNED_FLAGS if f.startswith("--")},
    **{"--no-" + f[2:]: _OWNED for f in VLLM_OWNED_FLAGS if f.startswith("--")},
    "--config": "loads engine arguments from a file, past these checks",
}
_OWNED_SHORT = sorted(f for f in VLLM_OWNED_FLAGS if not f.startswith("--"))
# Real vLLM flags that begin a refused one: argparse takes an exact match as it is.
_VLLM_EXACT_FLAGS = frozenset({"--reasoning-parser"})


def shown(text: str) -> str:
    return text if text.isprintable() else repr(text)


def vllm_flag_problem(arg: str) -> str | None:
    """Why the engine argument ``arg`` contradicts what llem sets (or reads a file), or None.

    Read as vLLM reads it: the name before '=' (and before '.', its JSON-field syntax) with
    '_' as '-'; argparse also takes an unambiguous prefix of a long flag, and a short flag
    with its value attached (``-tp2``, ``-qfp8``).
    """
    if not arg.startswith("-"):
        return None  # a value
    given = arg.split("=", 1)[0].split(".", 1)[0]
    name = given.replace("_", "-")
    if not name.startswith("--"):
        for short in _OWNED_SHORT:
            if name == short:
                return f"{shown(given)} {_OWNED}"
            if name.startswith(short):
                return f"{shown(given)} is {short} with a value attached; {short} {_OWNED}"
            if len(name) >= 2 and short.startswith(name):
                return f"{shown(given)} abbreviates {short}, which {_OWNED}"
        return None
    if name in _VLLM_EXACT_FLAGS or len(name) < 3:
        return None
    for flag in sorted(_REFUSED_LONG):
        if name == flag:
            spelled = "" if given == flag else f" ({flag})"
            return f"{shown(given)}{spelled} {_REFUSED_LONG[flag]}"
        if flag.startswith(name):
            return f"{shown(given)} abbreviates {flag}, which {_REFUSED_LONG[flag]}"
    return None


@dataclass(frozen=True)
class Takes:
    """What a flag takes: nothing (a switch), or values matching ``pattern`` (one, or one
    or more for ``many``); ``negatable``: a switch with a ``--no-`` form."""

    pattern: str | None = None
    many: bool = False
    negatable: bool = True
    hint: str = ""

    def accepts(self, value: str) -> bool:
        return self.pattern is not None and re.fullmatch(self.pattern, value) is not None


def _choice(*values: str) -> Takes:
    return Takes("|".join(re.escape(v) for v in values), hint=" or ".join(values))


SWITCH = Takes()
ONLY_ON = Takes(negatable=False)  # store_true: no --no- form
INT = Takes(r"[0-9]{1,9}", hint="a whole number")
SIGNED_INT = Takes(r"-?[0-9]{1,9}", hint="a whole number, -1 for none")
NUMBER = Takes(r"[0-9]{1,9}(\.[0-9]{1,9})?", hint="a number")
SIZE = Takes(r"[0-9]{1,15}(\.[0-9]{1,9})?[kKmMgGtT]?", hint="a count, e.g. 8192 or 8k")

# What a campaign may pass: settings that change what is measured (parallelism, batch and
# scheduler limits, KV cache, chunked prefill, prefix caching, CUDA graphs and compilation
# level, weights' load format, logging). Values are checked; none names a file, a module,
# a class or JSON. Names of older vLLM releases are kept (vLLM refuses those it lacks).
ALLOWED_VLLM_FLAGS: dict[str, Takes] = {
    # parallelism (the tensor-parallel size is vllm.tensor_parallel_size)
    "--pipeline-parallel-size": INT, "--data-parallel-size": INT,
    "--data-parallel-size-local": INT, "--decode-context-parallel-size": INT,
    "--prefill-context-parallel-size": INT, "--enable-expert-parallel": SWITCH,
    "--enable-eplb": SWITCH, "--disable-custom-all-reduce": SWITCH,
    "--max-parallel-loading-workers": INT, "--data-parallel-backend": _choice("mp"),
    "--api-server-count": INT,
    # batch and scheduler limits
    "--max-num-batched-tokens": SIZE, "--max-num-scheduled-tokens": SIZE,
    "--max-num-partial-prefills": INT, "--max-long-partial-prefills": INT,
    "--long-prefill-token-threshold": INT, "--num-scheduler-steps": INT,
    "--scheduling-policy": _choice("fcfs", "priority"), "--async-scheduling": SWITCH,
    "--stream-interval": INT,
    # chunked prefill, prefix caching
    "--enable-chunked-prefill": SWITCH, "--enable-prefix-caching": SWITCH,
    "--prefix-caching-hash-algo": _choice("builtin", "sha256", "sha256_cbor",
                                          "sha256_cbor_64bit", "xxhash", "xxhash_cbor"),
    # KV cache and memory (the cache dtype is vllm.kv_cache_dtype)
    "--block-size": INT, "--swap-space": NUMBER, "--cpu-offload-gb": NUMBER,
    "--kv-cache-memory-bytes": SIZE, "--kv-cache-memory": SIZE,
    "--num-gpu-blocks-override": INT, "--disable-hybrid-kv-cache-manager": SWITCH,
    "--calculate-kv-scales": SWITCH,
    # context, attention, CUDA graphs and compilation level (the length is max_model_len)
    "--max-seq-len-to-capture": INT, "--disable-sliding-window": SWITCH,
    "--disable-cascade-attn": SWITCH, "--cudagraph-capture-sizes": Takes(
        r"[0-9]{1,9}", many=True, hint="whole numbers"),
    "--max-cudagraph-capture-size": INT, "--optimization-level": _choice("0", "1", "2", "3"),
    "--performance-mode": _choice("balanced", "interactivity", "throughput"),
    # an attention backend by its enum name (FLASH_ATTN, ...): no dots, so never a module
    "--attention-backend": Takes(r"[A-Za-z][A-Za-z0-9_]{0,63}", hint="a backend's name"),
    # weights: formats that read tensors only ('dummy': random weights); the model's own
    # generation defaults or vLLM's, never a file
    "--load-format": _choice("auto", "safetensors", "pt", "dummy"),
    "--safetensors-load-strategy": _choice("eager", "lazy", "prefetch"),
    "--generation-config": _choice("auto", "vllm"), "--max-logprobs": SIGNED_INT,
    # logging and metrics
    "--disable-log-stats": ONLY_ON, "--disable-log-requests": ONLY_ON,
    "--enable-log-requests": SWITCH, "--disable-uvicorn-access-log": SWITCH,
    "--uvicorn-log-level": _choice("critical", "error", "warning", "info", "debug", "trace"),
    "--max-log-len": INT, "--kv-cache-metrics": SWITCH, "--cudagraph-metrics": SWITCH,
}
# Short spellings vLLM registers for listed flags.
VLLM_SHORT_FLAGS = {"-pp": "--pipeline-parallel-size", "-dp": "--data-parallel-size",
                    "-dpl": "--data-parallel-size-local", "-dcp": "--decode-context-parallel-size",
                    "-pcp": "--prefill-context-parallel-size", "-ep": "--enable-expert-parallel",
                    "-dpb": "--data-parallel-backend", "-asc": "--api-server-count"}
_OPT_LEVEL = re.compile(r"-O=?[0-3]")  # vLLM: -O3 and -O=3 are --optimization-level 3
_NEGATIVE = re.compile(r"-[0-9]+|-[0-9]*\.[0-9]+")  # argparse reads these as values


def _name(arg: str) -> str:
    """The flag of ``arg`` as vLLM reads it: before '=', '_' as '-' up to the first '.'."""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        head, dot, tail = name.partition(".")
        name = head.replace("_", "-") + dot + tail
    return name


def normalised_flag(flag: str) -> str:
    """A flag as the deployment lists it, in the form :func:`vllm_args_problem` compares."""
    return _name(flag.strip())


def _listed(name: str) -> tuple[str, Takes] | None:
    canonical = VLLM_SHORT_FLAGS.get(name, name)
    if canonical in ALLOWED_VLLM_FLAGS:
        return canonical, ALLOWED_VLLM_FLAGS[canonical]
    if canonical.startswith("--no-"):
        positive = "--" + canonical[5:]
        takes = ALLOWED_VLLM_FLAGS.get(positive)
        if takes is not None and takes.pattern is None and takes.negatable:
            return canonical, ONLY_ON
    return None


def vllm_args_problem(args: list[str], also_allowed: Collection[str] = (),
                      switch: str = "the deployment's allow-list") -> str | None:
    """Why ``args`` may not be passed to the engine, or None.

    ``also_allowed``: flags (normalised, see :func:`normalised_flag`) the deployment allows
    beyond the list, with any value, in any of vLLM's forms (``--f v``, ``--f=v``,
    ``--f.key v``); ``switch`` names where they are set, for the message.
    """
    extra = {normalised_flag(f) for f in also_allowed}
    i = 0
    while i < len(args):
        arg = args[i]
        where = f"{shown(arg)} (item {i})"
        if not arg.startswith("-") or _NEGATIVE.fullmatch(arg):
            return (f"{where} is a value that follows no flag taking one (vLLM would read it "
                    "as the model to serve)")
        if _OPT_LEVEL.fullmatch(arg):
            i += 1
            continue
        if arg == "-O":
            if i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
                i += 2
                continue
            return f"{where} takes an optimization level 0, 1, 2 or 3"
        name = _name(arg)
        has_value = "=" in arg
        if name.split(".", 1)[0] in extra:
            nxt = args[i + 1] if i + 1 < len(args) else None
            i += 1 if has_value or nxt is None or nxt.startswith("-") else 2
            continue
        if "." in name:
            return (f"{where} sets a key of a JSON-valued setting ('.' after the flag): "
                    "those can name code vLLM imports; a campaign may not pass them unless "
                    f"{switch} allows the flag")
        found = _listed(name)
        if found is None:
            read = "" if name == arg.split("=", 1)[0] else f", read as {shown(name)},"
            return (f"{where}{read} is not among the engine flags a campaign may pass "
                    f"(written in full; see README 'Engines'), and {switch} does not allow it")
        flag, takes = found
        if takes.pattern is None:
            if has_value:
                return f"{where}: {flag} is a switch and takes no value"
            i += 1
            continue
        if has_value:
            values, i = [arg.split("=", 1)[1]], i + 1
        elif i + 1 < len(args):
            values, i = [args[i + 1]], i + 2
        else:
            return f"{where}: {flag} needs a value ({takes.hint})"
        # nargs='+': argparse takes every following value, but only the one after '=' when
        # given so (``--f=1 2``: the 2 is then read as the model to serve)
        while takes.many and not has_value and i < len(args) and takes.accepts(args[i]):
            i += 1
        bad = [v for v in values if not takes.accepts(v)]
        if bad:
            return f"{where}: {flag} takes {takes.hint}, not {shown(bad[0])}"
    return None
