"""A local OpenAI-compatible HTTP server for tests: ``POST /v1/chat/completions`` on 127.0.0.1.

The answer text comes from a ``responder(body) -> str`` the test supplies; faults are scripted per
request: ``server.script(action, ...)`` queues actions consumed by the next requests, where an
action is one of

* ``"ok"``        - answer normally;
* ``"stall"``     - sleep ``stall_seconds`` (longer than the client's timeout), then answer;
* ``"429"``, ``"500"`` - that status with an OpenAI-style error body;
* ``"malformed"`` - HTTP 200 whose body is not JSON;
* ``"401"``, ``"404"`` - authentication / model errors (also produced by a wrong key or model).

``hold_after(n)`` makes every request after the n-th answered one wait until ``release()``, so a
test can kill a client at a known point. ``answered`` counts the 200 answers per request key (the
sha256 of model + messages + sampling parameters), ``received`` every request.

Run standalone for manual checks: ``python tests/fake_openai_server.py`` (echo responder).
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

KEY_FIELDS = ("model", "messages", "temperature", "max_tokens", "seed")


def request_key(body: dict) -> str:
    """Identity of a request, independent of JSON mode (a fallback without response_format is the same call)."""
    payload = {k: body.get(k) for k in KEY_FIELDS}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _client_gone(sock) -> bool:
    """True when the peer has closed the connection (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def echo_responder(body: dict) -> str:
    return body["messages"][-1]["content"]


class FakeOpenAIServer:
    def __init__(self, responder: Callable[[dict], str] = echo_responder, *, api_key: str | None = None,
                 models: tuple[str, ...] = ("fake-model",), stall_seconds: float = 1.5):
        self.responder = responder
        self.api_key = api_key
        self.models = models
        self.stall_seconds = stall_seconds
        self.answered: Counter = Counter()
        self.received: Counter = Counter()
        self.log: list[tuple[str, str]] = []  # (key, action) in arrival order
        self.json_mode_requests = 0
        self.reject_json_mode = False  # answer 400 to response_format, like an endpoint without JSON mode
        self._actions: deque = deque()
        self._lock = threading.Lock()
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- control
    def script(self, *actions: str) -> None:
        with self._lock:
            self._actions.extend(actions)

    def hold_after(self, n: int) -> None:
        self._released.clear()
        self._hold_after = n

    def release(self) -> None:
        self._hold_after = None
        self._released.set()

    @property
    def total_answered(self) -> int:
        return sum(self.answered.values())

    @property
    def total_received(self) -> int:
        return sum(self.received.values())

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- serving
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        if h.path.rstrip("/") != "/v1/chat/completions":
            return self._send(h, 404, {"error": {"message": f"no route {h.path}", "type": "invalid_request_error"}})
        body = json.loads(raw)
        key = request_key(body)
        with self._lock:
            self.received[key] += 1
            action = self._actions.popleft() if self._actions else "ok"
            self.log.append((key, action))
            if body.get("response_format"):
                self.json_mode_requests += 1
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            action = "401"
        elif body.get("model") not in self.models:
            action = "404"
        elif self.reject_json_mode and body.get("response_format"):
            action = "400"
        if self._hold_after is not None and self.total_answered >= self._hold_after:
            self._released.wait()
        if action == "stall":
            time.sleep(self.stall_seconds)
            action = "ok"
        if _client_gone(h.connection):  # killed or timed out while we waited: nobody gets this answer
            return
        if action in ("400", "401", "404", "429", "500"):
            messages = {"400": "response_format is not supported", "401": "Incorrect API key provided",
                        "404": f"The model {body.get('model')!r} does not exist", "429": "Rate limit reached",
                        "500": "The server had an error"}
            return self._send(h, int(action), {"error": {"message": messages[action], "type": "fake_error",
                                                         "code": action}})
        if action == "malformed":
            return self._send_raw(h, 200, b'{"id": "chatcmpl-broken", "choices": [')
        text = self.responder(body)
        tokens_in = sum(len(m["content"].split()) for m in body["messages"])
        answer = {"id": f"chatcmpl-{key[:12]}", "object": "chat.completion", "created": int(time.time()),
                  "model": body["model"],
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": text}}],
                  "usage": {"prompt_tokens": tokens_in, "completion_tokens": len(text.split()),
                            "total_tokens": tokens_in + len(text.split())}}
        if self._send(h, 200, answer):
            with self._lock:
                self.answered[key] += 1

    def _send(self, h, status: int, payload: dict) -> bool:
        return self._send_raw(h, status, json.dumps(payload).encode())

    def _send_raw(self, h, status: int, data: bytes) -> bool:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) or was killed
            return False


if __name__ == "__main__":
    with FakeOpenAIServer() as srv:
        print(f"fake OpenAI endpoint at {srv.base_url} (model fake-model); Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
