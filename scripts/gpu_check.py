"""GPU check (see scripts/gpu_check.sh): measures real NVML energy with llem's runner.

1. A random-weight Llama-style model of ~1B parameters, built locally, runs a 2-config
   x 3-cycle interleaved plan (batch 1 vs 8, bf16, fixed output length) through
   `llem_core.runtime.measure` with the NVML meter and a 10 s minimum window.
2. Unless --skip-8b: a random-weight model of the Llama-3.1-8B architecture (bf16, fixed
   output length) at batch 8 and 64; its J/output token is printed next to ML.ENERGY's
   published figures for that architecture on one H100 with vLLM (0.455 and 0.119
   J/token). Backend and GPU differ: the ratio is information, not a verdict.
3. Unless --skip-vllm: the same 8B-architecture model served by vLLM (`backend: vllm`,
   llem starts the server) under a burst with fixed output length at max_num_seqs 8 and
   64, NVML meter; the steady-state J/token (ML.ENERGY's window) is printed next to
   ML.ENERGY's Llama-3.1-8B / H100 / vLLM figures (0.171 J/token at batch 64, about 0.12
   with recent vLLM). Needs an interpreter with a CUDA vLLM: --vllm-python, else
   $LLEM_VLLM_PYTHON, else the current one; without one this part says so and is skipped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ONE_B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
         "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 4096}
LLAMA_31_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8,
               "max_position_embeddings": 8192, "rope_theta": 500000.0}
ML_ENERGY_J_PER_TOKEN = {8: 0.455, 64: 0.119}
ML_ENERGY_VLLM = {64: "0.171 (v1 paper), ~0.12 (recent vLLM)"}


def build(out: Path, arch: dict, vocab: int) -> Path:
    """Random weights initialised on the GPU in bf16 (fast), saved, then loaded by path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from llem_core.runtime.tinymodel import build_tokenizer

    tok = build_tokenizer(512)
    cfg = LlamaConfig(vocab_size=vocab, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **arch)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def run(model: Path, batch: int, cycle: int, out_tokens: int, prompts: int, baseline_s: float):
    from llem_core.analysis.results import RunSpec
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.campaign.grid import config_hash
    from llem_core.runtime.measure import run as run_one

    cfg = ExperimentConfig(
        model=str(model), dtype="bfloat16", device="cuda", gpus=[0], batch_size=batch,
        max_input_tokens=128, max_output_tokens=out_tokens, min_output_tokens=out_tokens,
        prompts={"count": prompts, "length": 128}, warmup_runs=1,
        energy={"meter": "nvml", "baseline_s": baseline_s, "min_window_s": 10.0})
    spec = RunSpec(name=f"batch={batch}", config_hash=config_hash(cfg), cycle=cycle,
                   config=cfg)
    return run_one(spec, None)


def vllm_python(given: str | None) -> str | None:
    """An interpreter whose vLLM sees CUDA, or None (the reason is printed)."""
    import os
    import subprocess

    from llem_core import env_names
    python = given or os.environ.get(env_names.VLLM_PYTHON) or sys.executable
    probe = "import torch, vllm; assert torch.cuda.is_available(); print(vllm.__version__)"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["?"])[-1]
        print(f"vLLM part skipped: {python} has no CUDA vLLM ({tail})")
        return None
    print(f"vLLM {r.stdout.strip()} at {python}")
    return python


def run_vllm(model: Path, python: str, seqs: int, out_tokens: int):
    from llem_core.analysis.results import RunSpec
    from llem_core.campaign.config import ExperimentConfig
    from llem_core.campaign.grid import config_hash
    from llem_core.runtime.measure import run as run_one

    cfg = ExperimentConfig(
        model=str(model), backend="vllm", dtype="bfloat16", device="cuda", gpus=[0],
        max_input_tokens=128, max_output_tokens=out_tokens,
        prompts={"count": 10 * seqs, "length": 128},
        energy={"meter": "nvml", "baseline_s": 5.0},
        vllm={"python": python, "max_num_seqs": seqs, "max_model_len": 1024,
              "loaded_baseline_s": 5.0, "startup_timeout_s": 900},
        load={"pattern": "burst", "warmup_requests": 4, "min_window_s": 30.0,
              "energy_interval_s": 0.1})
    spec = RunSpec(name=f"vllm max_num_seqs={seqs}", config_hash=config_hash(cfg), cycle=1,
                   config=cfg)
    return run_one(spec, None)


def vllm_line(r) -> str:
    s = r.serving
    st = s.steady_state
    e = st.energy
    occ = f"{st.occupancy_mean:.1f}" if st.occupancy_mean is not None else "n/a"
    jpt = f"{e.raw_j_per_token:.4f}" if e.raw_j_per_token is not None else "n/a"
    adj = f"{e.adjusted_idle_j_per_token:.4f}" if e.adjusted_idle_j_per_token is not None \
        else "n/a"
    loaded = f"{e.adjusted_loaded_j_per_token:.4f}" \
        if e.adjusted_loaded_j_per_token is not None else "n/a"
    span = f"{st.end_s - st.start_s:.1f}" if st.start_s is not None else "n/a"
    return (f"{r.name}: startup {s.startup_s:.0f} s, window {span} s, occupancy {occ}, "
            f"J/token raw {jpt} idle-adj {adj} loaded-adj {loaded}, idle "
            f"{s.idle_baseline_w} W loaded {s.loaded_baseline_w} W, "
            f"tok/s {r.metrics.output_tokens_per_s:.0f}, flags {s.flags or '-'}")


def line(r) -> str:
    e, m = r.energy, r.metrics
    agree = f"{e.counter_vs_polled_rel_diff:.2%}" if e.counter_vs_polled_rel_diff is not None \
        else "n/a"
    th = r.energy.thermal.get("gpu0", {})
    return (f"{r.name:<9} c{r.cycle} window {m.window_s:6.1f}s reps {m.repetitions:3d} "
            f"raw {e.raw_j:9.1f} J adj {e.adjusted_j:9.1f} J "
            f"J/tok raw {e.raw_j_per_output_token:.4f} adj {e.adjusted_j_per_output_token:.4f} "
            f"tok/s {m.output_tokens_per_s:8.1f} TTFT p50 {1e3 * m.ttft_s.p50:7.1f} ms "
            f"ITL p50 {1e3 * m.itl_s.p50:6.2f} ms counter~poll {agree} "
            f"T {th.get('temperature_start_c')}->{th.get('temperature_end_c')} C "
            f"throttle {th.get('throttle_reasons') or '-'} flags {e.flags or '-'}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-8b", action="store_true")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--vllm-python", help="interpreter with a CUDA vLLM")
    args = ap.parse_args()
    from llem_core.runtime.devices import DeviceError, NullDevices, gpus_open

    try:
        with gpus_open() as devices:
            problem = devices.reason if isinstance(devices, NullDevices) else (
                None if devices.count() >= 1 else f"{devices.label} sees no GPU")
    except DeviceError as exc:
        problem = str(exc)
    if problem:
        print(f"gpu_check: no GPU: {problem}", file=sys.stderr)
        return 2
    from llem_core.runtime.energy.nvml import NvmlMeter

    meter = NvmlMeter([0], 0.1)
    hw = meter.hardware()
    meter.close()
    gpu = hw["gpus"][0]
    print(f"GPU: {gpu['name']}  driver {hw.get('driver')}  CUDA driver {hw.get('cuda_driver')}"
          f"  power limit {gpu.get('power_limit_w')} W")
    print(f"energy counter update period: {hw.get('counter_update_period_s')} s; "
          f"instant power field: {hw.get('instant_power_field')}")
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        m1 = build(Path(tmp) / "llama-1b", ONE_B, 32000)
        print(f"built ~1B model in {time.time() - t0:.0f} s")
        results = []
        for cycle in (1, 2, 3):
            for batch in (1, 8):
                r = run(m1, batch, cycle, out_tokens=128, prompts=8, baseline_s=5.0)
                results.append(r)
                if cycle == 1 and batch == 1:
                    print(f"idle baseline: {r.energy.baseline_w:.1f} W over "
                          f"{r.energy.baseline_s:.1f} s ({r.energy.baseline_source})")
                print(line(r), flush=True)
        diffs = [r.energy.counter_vs_polled_rel_diff for r in results
                 if r.energy.counter_vs_polled_rel_diff is not None]
        if diffs:
            print(f"counter vs polling: max {max(diffs):.2%} over {len(diffs)} windows "
                  f"(target < 5 % on windows >= 10 s)")
        if not args.skip_8b:
            m8 = build(Path(tmp) / "llama-8b", LLAMA_31_8B, 128256)
            print(f"built Llama-3.1-8B-architecture model at {time.time() - t0:.0f} s")
            for batch in (8, 64):
                r = run(m8, batch, 1, out_tokens=256, prompts=batch, baseline_s=5.0)
                print(line(r))
                ours = r.energy.adjusted_j_per_output_token
                pub = ML_ENERGY_J_PER_TOKEN[batch]
                print(f"  8B batch {batch}: {ours:.4f} J/token (adjusted), "
                      f"{r.energy.raw_j_per_output_token:.4f} raw; ML.ENERGY H100 vLLM "
                      f"{pub} -> ratio adjusted/published {ours / pub:.2f}")
        python = None if args.skip_vllm else vllm_python(args.vllm_python)
        if python is not None:
            m8 = Path(tmp) / "llama-8b"
            if not (m8 / "config.json").exists():
                build(m8, LLAMA_31_8B, 128256)
            for seqs in (8, 64):
                r = run_vllm(m8, python, seqs, out_tokens=256)
                print(vllm_line(r), flush=True)
                print(f"  ML.ENERGY Llama-3.1-8B H100 vLLM at batch {seqs}: "
                      f"{ML_ENERGY_VLLM.get(seqs, 'not published here')} J/token")
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
