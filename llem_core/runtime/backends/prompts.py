"""Prompt texts from a prompt source: seeded synthetic words, or a JSONL file."""

from __future__ import annotations

import json
import random
from pathlib import Path

from llem_core.campaign.config import BuiltinPrompts, JsonlPrompts

_SYLLABLES = ("ka", "lo", "mi", "ten", "ra", "su", "vel", "or", "an", "pe", "di", "gro",
              "na", "the", "is", "of", "wa", "ter", "en", "ergy", "light", "stone", "quo")


def builtin_texts(src: BuiltinPrompts) -> list[str]:
    """``count`` texts of ``length`` pseudo-words each; every word is at least one token."""
    rng = random.Random(src.seed)
    texts = []
    for _ in range(src.count):
        words = ("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3)))
                 for _ in range(src.length))
        texts.append(" ".join(words))
    return texts


def jsonl_texts(src: JsonlPrompts) -> list[str]:
    path = Path(src.path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    texts = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(src.field), str):
                raise ValueError(f"{path}:{lineno}: no string field {src.field!r}")
            texts.append(obj[src.field])
            if src.limit is not None and len(texts) >= src.limit:
                break
    if not texts:
        raise ValueError(f"{path}: no prompts")
    return texts


def load_texts(src: BuiltinPrompts | JsonlPrompts) -> list[str]:
    return builtin_texts(src) if isinstance(src, BuiltinPrompts) else jsonl_texts(src)
