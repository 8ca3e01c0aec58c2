"""llem's timing harness vs a bare `model.generate` loop: same model, prompts, settings.

Both are measured side by side in one process, alternating, on the tiny local model
(and a somewhat larger random-weight one): the ratio of tokens/s is the harness's cost
(per-step streamer timestamps + device sync). Target: llem >= 95 % of bare.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.backends.prompts import load_texts
from llem_core.runtime.backends.pytorch import PytorchBackend
from llem_core.runtime.tinymodel import TINY_ARCH, build_tiny_model

REPEATS = 15
SMALL_ARCH = {**TINY_ARCH, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 4}


def bench(model_dir: Path, batch_size: int) -> tuple[float, float]:
    cfg = ExperimentConfig(model=str(model_dir), dtype="float32", device="cpu",
                           batch_size=batch_size, max_input_tokens=64, max_output_tokens=32,
                           min_output_tokens=32, prompts={"count": 16, "length": 64},
                           energy={"meter": "none", "min_window_s": 0})
    be = PytorchBackend(cfg)
    be.load()
    batches = be.prepare(load_texts(cfg.prompts))
    kwargs = be._generate_kwargs()
    def run_llem() -> float:
        # the backend's generate with its step clock, as the runner calls it
        t0 = time.perf_counter()
        tokens = sum(sum(be.generate(b).output_lengths) for b in batches)
        return tokens / (time.perf_counter() - t0)

    def run_bare() -> float:
        t0 = time.perf_counter()
        n = 0
        with torch.inference_mode():
            for b in batches:
                out = be.model.generate(**b, **kwargs)
                n += (out.shape[1] - b["input_ids"].shape[1]) * out.shape[0]
        return n / (time.perf_counter() - t0)

    run_llem(), run_bare()  # warm both paths (first calls pay one-off initialisation)
    llem, bare = [], []
    for i in range(REPEATS):
        # ABBA order, so slow drifts of a shared machine hit both sides alike
        pair = (run_llem, run_bare) if i % 2 == 0 else (run_bare, run_llem)
        for fn in pair:
            (llem if fn is run_llem else bare).append(fn())
    return statistics.median(llem), statistics.median(bare)


def main() -> int:
    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, arch in (("tiny (2x64)", None), ("small (4x256)", SMALL_ARCH)):
            model = build_tiny_model(Path(tmp) / label.split()[0], arch=arch)
            for bs in (1, 8):
                llem, bare = bench(model, bs)
                rows.append((label, bs, llem, bare, llem / bare))
    print(f"{'model':<15} {'batch':>5} {'llem tok/s':>11} {'bare tok/s':>11} {'ratio':>7}")
    for label, bs, llem, bare, ratio in rows:
        print(f"{label:<15} {bs:>5} {llem:>11.1f} {bare:>11.1f} {ratio:>7.3f}")
    worst = min(r[4] for r in rows)
    print(f"worst ratio {worst:.3f} (harness cost {100 * (1 - worst):.1f} %; target < 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
