"""A fake OpenAI-compatible engine for the launch tests of engines no machine here can run
(TensorRT-LLM, SGLang): started by llem in the engine's place with the engine's argv, it
writes that argv to $FAKE_ARGV_FILE, listens on the argv's --port and answers /health,
/version, /v1/models, /metrics and streamed /v1/completions: ``min_tokens`` tokens (else
``max_tokens``) of one word each, 5 ms apart, with usage counts in a last chunk."""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "0.0-fake"
running = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"{self.command} {self.path}\n")

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b"{}")
        elif self.path == "/version":
            self._send(200, json.dumps({"version": VERSION}).encode())
        elif self.path == "/v1/models":
            self._send(200, b'{"data": [{"id": "fake"}]}')
        elif self.path == "/metrics":
            self._send(200, f"fake:num_requests_running {running}\n"
                            f"fake:num_requests_waiting 0\n".encode(), "text/plain")
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        global running
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/completions" or not body.get("stream"):
            self._send(400, b'{"error": "only streamed completions"}')
            return
        n = int(body.get("min_tokens") or body["max_tokens"])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        running += 1
        try:
            for i in range(n):
                time.sleep(0.005)
                chunk = {"choices": [{"index": 0, "text": f" w{i}",
                                      "finish_reason": "length" if i == n - 1 else None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"prompt_tokens": len(str(body.get("prompt", "")).split()),
                     "completion_tokens": n}
            self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                             "data: [DONE]\n\n".encode())
        finally:
            running -= 1


def main(argv: list[str]) -> None:
    with open(os.environ["FAKE_ARGV_FILE"], "w") as f:
        json.dump(argv, f)
    port = int(argv[argv.index("--port") + 1])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
