"""A small OpenAI-compatible chat-completions server on 127.0.0.1 — the test double at the network edge.

``reply`` maps the request's messages to the assistant's text, or to an int HTTP status to fail with.
Every request body and its Authorization header are recorded for the test to inspect.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OpenAICompatibleServer:
    def __init__(self, reply: Callable[[list[dict]], str | int], delay_s: float = 0.0):
        self.reply = reply
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.authorizations: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    server.authorizations.append(self.headers.get("Authorization", ""))
                if server.delay_s:
                    time.sleep(server.delay_s)
                answer = server.reply(body["messages"])
                if isinstance(answer, int):  # a refused key is quoted back, as OpenAI's 401 quotes part of it
                    # ... and a failing proxy or debug page may echo the whole request
                    quoted = self.headers.get("Authorization", "")
                    message = f"Incorrect API key provided: {quoted}" if answer == 401 else \
                        f"simulated failure of the request with Authorization: {quoted}"
                    self._send(answer, {"error": {"message": message, "type": "server_error"}})
                    return
                self._send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103},
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
