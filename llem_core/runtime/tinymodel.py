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


# The GGUF names of a Llama model's tensors (llama.cpp's LLM_ARCH_LLAMA), from the Hugging
# Face names under model.layers.<i>.
_GGUF_LAYER = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
GGUF_DTYPES = ("float32", "float16")


def _rope_rows(weight, heads: int):
    """Hugging Face's rotary layout (halves) as GGML's (interleaved pairs), per head: the
    permutation llama.cpp's converter applies to q and k."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _gguf_vocab(tokenizer_json: dict) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id, their GGUF types (1 normal, 3 control) and the BPE merges."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"tokenizer model {model.get('type')!r}: only byte-level BPE "
                         "(GPT-2 style) tokenizers are converted")
    vocab = dict(model["vocab"])
    special = set()
    for added in tokenizer_json.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    by_id = sorted((i, t) for t, i in vocab.items())
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise ValueError("the tokenizer's ids are not 0..n-1")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return [t for _, t in by_id], [3 if i in special else 1 for i, _ in by_id], merges


def to_gguf(model_dir: str | Path, out_file: str | Path, dtype: str = "float32") -> Path:
    """Convert a local Llama model with a byte-level BPE tokenizer (the tiny model) into one
    GGUF file for llama.cpp, offline (the ``gguf`` package writes it). Norms stay float32;
    matrices are ``dtype`` (float32 or float16)."""
    import json

    import gguf
    import numpy as np
    from safetensors.torch import load_file

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"GGUF dtype {dtype!r}: one of {', '.join(GGUF_DTYPES)}")
    src = Path(model_dir)
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise ValueError(f"{src}: model_type {cfg.get('model_type')!r}, only llama converts")
    tokens, types, merges = _gguf_vocab(json.loads((src / "tokenizer.json").read_text()))
    weights = {k: v.float().numpy() for k, v in load_file(src / "model.safetensors").items()}
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or \
        cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(src.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_theta", 10000.0))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "float32"
                    else gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("pad_token_id", w.add_pad_token_id)):
        if cfg.get(key) is not None:
            add(cfg[key])
    w.add_add_bos_token(False)  # as the Hugging Face tokenizer: no BOS added to prompts

    def put(name: str, array: np.ndarray) -> None:
        matrix = array.ndim > 1 and dtype == "float16"
        w.add_tensor(name, array.astype(np.float16 if matrix else np.float32))

    embed = weights["model.embed_tokens.weight"]
    put("token_embd.weight", embed)
    put("output_norm.weight", weights["model.norm.weight"])
    put("output.weight", weights.get("lm_head.weight", embed))  # tied: the embedding
    for i in range(cfg["num_hidden_layers"]):
        for hf, name in _GGUF_LAYER.items():
            t = weights[f"model.layers.{i}.{hf}.weight"]
            if name in ("attn_q", "attn_k"):
                t = _rope_rows(t, heads if name == "attn_q" else kv_heads)
            put(f"blk.{i}.{name}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
