"""PyTorch + transformers backend: `from_pretrained` by path or id, batched `generate`.

Each decode step is timestamped by a streamer of our own that keeps token ids as they
are (no text decoding in the timed path) and synchronises the device before reading the
clock, so a timestamp marks when a token really exists.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

from llem_core.campaign.config import ExperimentConfig
from llem_core.runtime.backends.base import BackendError, BatchTiming

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StepClock(BaseStreamer):
    """Records a timestamp for every generated step; the first put() is the prompt."""

    def __init__(self, sync: Any) -> None:
        self._sync = sync
        self._prompt_seen = False
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._sync()
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class PytorchBackend:
    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        want_cuda = config.device == "cuda" or (config.device == "auto" and config.gpus)
        if want_cuda and not torch.cuda.is_available():
            if config.device == "cuda":
                raise BackendError("device is cuda but torch sees no CUDA GPU")
            want_cuda = False
        self.device = f"cuda:{config.gpus[0]}" if want_cuda else "cpu"
        self.model: Any = None
        self.tokenizer: Any = None

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def _sync(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)

    def import_modules(self) -> None:
        """Import the model's modeling code, which transformers imports lazily on first use."""
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        cfg = self.config
        local = cfg.is_local_model()
        try:
            conf = AutoConfig.from_pretrained(
                str(Path(cfg.model).expanduser()) if local else cfg.model,
                local_files_only=local or os.environ.get("HF_HUB_OFFLINE") == "1")
            MODEL_FOR_CAUSAL_LM_MAPPING[type(conf)]
        except (OSError, ValueError, KeyError):
            pass  # load() reports an unloadable model with its reason

    def load(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.is_local_model() and not Path(cfg.model).expanduser().is_dir():
            raise BackendError(f"model path {cfg.model} does not exist")
        kwargs: dict[str, Any] = {"dtype": _DTYPES[cfg.dtype]}
        if cfg.is_local_model() or os.environ.get("HF_HUB_OFFLINE") == "1":
            kwargs["local_files_only"] = True
        if self.on_gpu and len(cfg.gpus) > 1:
            kwargs["device_map"] = "auto"
            kwargs["max_memory"] = {g: torch.cuda.get_device_properties(g).total_memory
                                    for g in cfg.gpus}
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(Path(cfg.model).expanduser()) if cfg.is_local_model() else cfg.model,
                local_files_only=kwargs.get("local_files_only", False))
            self.model = AutoModelForCausalLM.from_pretrained(
                str(Path(cfg.model).expanduser()) if cfg.is_local_model() else cfg.model,
                **kwargs)
        except torch.OutOfMemoryError as exc:
            raise BackendError(f"out of memory loading {cfg.model}: {_first_line(exc)}") from exc
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load model {cfg.model}: {_first_line(exc)}") from exc
        if "device_map" not in kwargs:
            self.model.to(self.device)
        self.model.eval()
        tok = self.tokenizer
        tok.padding_side = "left"  # decoder-only batching: pad on the left
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._sync()
        return {
            "load_s": time.perf_counter() - t0,
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "architecture": type(self.model).__name__,
        }

    def prepare(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        cfg = self.config
        max_len = cfg.max_input_tokens
        if cfg.prompts.kind == "builtin":
            max_len = min(max_len, cfg.prompts.length)
        batches = []
        for i in range(0, len(texts), cfg.batch_size):
            enc = self.tokenizer(texts[i:i + cfg.batch_size], return_tensors="pt", padding=True,
                                 truncation=True, max_length=max_len)
            batches.append({k: v.to(self.device) for k, v in enc.items()
                            if k in ("input_ids", "attention_mask")})
        return batches

    def _generate_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        d = cfg.decoding
        kw: dict[str, Any] = {
            "max_new_tokens": cfg.max_output_tokens,
            "min_new_tokens": cfg.min_output_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": d.repetition_penalty,
            "num_beams": 1,
        }
        if d.sampling:
            kw.update(do_sample=True, temperature=d.temperature,
                      top_k=d.top_k if d.top_k is not None else 0,
                      top_p=d.top_p if d.top_p is not None else 1.0)
        else:
            kw.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        return kw

    def generate(self, batch: dict[str, torch.Tensor]) -> BatchTiming:
        clock = StepClock(self._sync)
        kwargs = self._generate_kwargs()
        in_len = batch["input_ids"].shape[1]
        self._sync()
        submitted = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self.model.generate(**batch, streamer=clock, **kwargs)
        except torch.OutOfMemoryError as exc:
            raise BackendError(f"out of memory at batch_size {self.config.batch_size}: "
                               f"{_first_line(exc)}") from exc
        new = out[:, in_len:]
        if new.shape[1] != len(clock.times):
            raise BackendError(f"streamer saw {len(clock.times)} steps but generate returned "
                               f"{new.shape[1]} tokens")
        return BatchTiming(
            submitted=submitted,
            step_times=clock.times,
            input_lengths=[int(x) for x in batch["attention_mask"].sum(dim=1).tolist()],
            output_lengths=self._output_lengths(new),
        )

    def _output_lengths(self, new: torch.Tensor) -> list[int]:
        """Tokens generated per request: up to and including its first EOS."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        lengths = []
        for row in new.tolist():
            n = len(row)
            for j, tok in enumerate(row):
                if j >= self.config.min_output_tokens and tok in eos_ids:
                    n = j + 1
                    break
            lengths.append(n)
        return lengths

    def reset_peak_memory(self) -> None:
        if self.on_gpu:
            for g in self.config.gpus:
                torch.cuda.reset_peak_memory_stats(g)

    def peak_memory(self) -> tuple[int | None, str]:
        if self.on_gpu:
            return (sum(torch.cuda.max_memory_allocated(g) for g in self.config.gpus),
                    "torch.cuda.max_memory_allocated")
        # ru_maxrss is in KiB on Linux; it is the process's peak, never reset.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_max_rss"

    def versions(self) -> dict[str, str | None]:
        return {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cuda": torch.version.cuda,
            "cudnn": str(torch.backends.cudnn.version()) if self.on_gpu else None,
        }

    def close(self) -> None:
        self.model = None
        if self.on_gpu:
            torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
