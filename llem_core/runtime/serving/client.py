"""The streaming client: sends a load to an OpenAI-compatible server and timestamps events.

Each request is streamed (``stream: true`` with ``stream_options.include_usage``); every
server-sent event is timestamped with :func:`time.monotonic` when its line arrives. As in
``vllm bench serve``, an *event* is a chunk whose ``choices`` is not empty; a *content event*
is one that carries text. The engine's usage counts are kept to be checked against them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llem_core.runtime.engines.base import Served
from llem_core.runtime.engines.settings import LoadSettings
from llem_core.runtime.serving.load import arrival_offsets


@dataclass
class RequestRecord:
    """One streamed request as the client saw it (times on the monotonic clock)."""

    index: int
    submitted: float = 0.0
    scheduled: float | None = None
    event_times: list[float] = field(default_factory=list)
    content_times: list[float] = field(default_factory=list)
    # One entry per output token, at the time of the chunk that carried it: a chunk's token
    # ids when the engine sends them (several when its stream coalesced outputs under load),
    # else one per content event.
    token_times: list[float] = field(default_factory=list)
    done: float | None = None
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def first_token(self) -> float | None:
        return self.event_times[0] if self.event_times else None


def request_body(server: Served, model: str, prompt: str, max_tokens: int,
                 fixed: bool, temperature: float) -> dict[str, Any]:
    """The JSON body of one streamed request (fixed length asked for as the engine takes it)."""
    body: dict[str, Any] = {"model": server.model_name or model, "max_tokens": max_tokens,
                            "temperature": temperature, "stream": True,
                            "stream_options": {"include_usage": True}}
    if server.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if server.token_ids:
        body["return_token_ids"] = True
    if fixed and server.fixed_length == "ignore_eos":
        body.update(ignore_eos=True, min_tokens=max_tokens)
    elif fixed and server.fixed_length == "generation_config":
        body["generation_config"] = json.dumps(
            {"min_new_tokens": max_tokens, "max_new_tokens": max_tokens,
             "do_sample": temperature > 0, **({"temperature": temperature}
                                              if temperature > 0 else {})})
    return body


def endpoint_path(server: Served) -> str:
    return "/v1/chat/completions" if server.endpoint == "chat" else "/v1/completions"


def _text(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        return str((choice.get("delta") or {}).get("content") or "")
    return str(choice.get("text") or "")


async def stream_one(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                     rec: RequestRecord, chat: bool) -> None:
    """Send one request and record its events; errors are recorded, never raised."""
    rec.submitted = time.monotonic()
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                rec.error = f"HTTP {resp.status_code}: {text.strip()[:200]}"
                return
            async for line in resp.aiter_lines():
                now = time.monotonic()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = json.loads(payload)
                if "error" in data:
                    rec.error = f"stream error: {str(data['error'])[:200]}"
                    return
                record_chunk(rec, data, now, chat)
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as exc:
        rec.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        return
    rec.done = time.monotonic()


def record_chunk(rec: RequestRecord, data: dict[str, Any], now: float, chat: bool) -> None:
    choices = data.get("choices") or []
    if choices:
        rec.event_times.append(now)
        text = _text(choices[0], chat)
        if text:
            rec.content_times.append(now)
        ids = choices[0].get("token_ids") or (choices[0].get("delta") or {}).get("token_ids")
        if isinstance(ids, list) and ids:
            rec.token_times.extend([now] * len(ids))
        elif text:
            rec.token_times.append(now)
        if choices[0].get("finish_reason"):
            rec.finish_reason = str(choices[0]["finish_reason"])
    usage = data.get("usage")
    if isinstance(usage, dict):
        rec.usage_prompt_tokens = usage.get("prompt_tokens")
        rec.usage_completion_tokens = usage.get("completion_tokens")


async def run_load(base_url: str, server: Served, load: LoadSettings,
                   bodies: Sequence[dict[str, Any]]) -> tuple[list[RequestRecord], float, float]:
    """Send every body following the load pattern; the records and the load's start and end."""
    url = base_url + endpoint_path(server)
    chat = server.endpoint == "chat"
    n = len(bodies)
    records = [RequestRecord(index=i) for i in range(n)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(server.request_timeout_s, connect=30.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.monotonic()
        offsets = arrival_offsets(load, n)
        if offsets is None:
            await _closed_loop(client, url, bodies, records, load.concurrency or 1, chat)
        else:
            await asyncio.gather(*(_at(t0 + off, client, url, b, r, chat)
                                   for off, b, r in zip(offsets, bodies, records, strict=True)))
        return records, t0, time.monotonic()


async def _at(when: float, client: httpx.AsyncClient, url: str, body: dict[str, Any],
              rec: RequestRecord, chat: bool) -> None:
    rec.scheduled = when
    delay = when - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    await stream_one(client, url, body, rec, chat)


async def _closed_loop(client: httpx.AsyncClient, url: str, bodies: Sequence[dict[str, Any]],
                       records: list[RequestRecord], concurrency: int, chat: bool) -> None:
    """N workers; each sends the next request as soon as its previous one finished."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await stream_one(client, url, bodies[i], records[i], chat)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
