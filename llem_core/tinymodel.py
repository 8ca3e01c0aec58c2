"""Build a tiny random-weight causal LM and a BPE tokenizer locally (no download).

The model is saved with ``save_pretrained`` and loaded by path exactly as a real model
is, so tests and the CPU example exercise the real loading and generation code.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TINY_ARCH = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}
# Named architectures (``llem make-tiny-model --arch``). vLLM's CPU attention takes head
# sizes 32 to 512, so the engine tests use "vllm-tiny" (head_dim 32); "llama-100m" streams
# one token per event on a CPU (timing comparisons); "llama-3.1-8b" is Llama-3.1-8B's shape
# (with this tokenizer's 512-token vocabulary) for the GPU check.
ARCHS: dict[str, dict] = {
    "tiny": TINY_ARCH,
    "vllm-tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2,
                  "max_position_embeddings": 1024},
    "llama-100m": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "num_key_value_heads": 4,
                   "max_position_embeddings": 2048},
    "llama-3.1-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8,
                     "max_position_embeddings": 8192, "rope_theta": 500000.0},
}


def corpus_lines() -> list[str]:
    text = resources.files("llem_core.data").joinpath("tiny_corpus.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|pad|>")


def build_tiny_model(out_dir: str | Path, seed: int = 0, arch: dict | str | None = None,
                     vocab_size: int = 512, dtype: str = "float32",
                     device: str = "cpu") -> Path:
    """Write a Llama-architecture model with random weights and its tokenizer to ``out_dir``
    (``arch``: a config dict or a name in :data:`ARCHS`; a large one is best initialised in
    bfloat16 on a GPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
        arch = ARCHS[arch]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True, **(arch or TINY_ARCH))
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
