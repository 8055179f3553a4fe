"""A scriptable OpenAI-compatible chat-completions server for the text-generation tests.

It listens on 127.0.0.1 with an ephemeral port and serves ``POST /v1/chat/completions`` from a
background thread. Each request takes the next action from a per-test script (``script()``),
or ``default`` once the script is used up. ``default`` may also be a callable mapping the
requested labels to an action. Actions:

* ``"ok"``: a sentence that mentions every requested label.
* ``"slow"``: sleep ``slow_s`` seconds (beyond the client timeout), then reply normally.
* ``"delay"``: sleep ``delay_s`` seconds, then reply normally (for concurrency checks).
* ``"429"``, ``"500"``, ``"503"``, ``"401"``: an error status with an OpenAI-style error body.
* ``"bad_json"``: a 200 whose body is not JSON.
* ``"empty"``: a 200 with empty message content.
* ``"no_choices"``: a 200 whose JSON has no ``choices`` field.
* ``"missing_label"``: a sentence that leaves out the first requested label.

:func:`partial_outage` builds a ``default`` that fails a fraction of the label sets with HTTP 500
and answers another fraction with malformed output, chosen by a hash of the (sorted) label set,
so a label set fails on every retry and a rerun meets the same failures until ``default`` changes.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = str | Callable[[list[str]], str]

_PROMPT_RE = re.compile(r"contains (.*)\.\s*$", re.S)


def labels_from_prompt(prompt: str) -> list[str]:
    """The labels listed in a CoMC-style prompt (``... contains a, b, c.``)."""
    m = _PROMPT_RE.search(prompt)
    return [s.strip() for s in m.group(1).split(",")] if m else []


MALFORMED = ("bad_json", "empty", "no_choices", "missing_label")


def label_set_share(labels: list[str] | tuple[str, ...]) -> float:
    """A number in [0, 1) fixed by the label set (order-free), uniform over label sets."""
    digest = hashlib.sha256("\x1f".join(sorted(labels)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def outage_action(labels: list[str] | tuple[str, ...], failing: float, malformed: float = 0.0) -> str:
    """``"500"`` for a ``failing`` share of label sets, a malformed reply for the next
    ``malformed`` share, ``"ok"`` for the rest."""
    u = label_set_share(labels)
    if u < failing:
        return "500"
    if u < failing + malformed:
        return MALFORMED[int((u - failing) / malformed * len(MALFORMED)) % len(MALFORMED)]
    return "ok"


def partial_outage(failing: float, malformed: float = 0.0) -> Callable[[list[str]], str]:
    """A ``default`` action for a deterministic partial outage (see :func:`outage_action`)."""
    return lambda labels: outage_action(labels, failing, malformed)


def _sentence(labels: list[str]) -> str:
    if not labels:
        return "An empty room with nothing in it."
    if len(labels) == 1:
        return f"A bright photo of a {labels[0]} on a table."
    return "A photo showing a " + ", a ".join(labels[:-1]) + f" and a {labels[-1]} together."


def _completion(content: str | None, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


class LLMServer:
    """The server state shared with the tests: script, counters and recorded prompts."""

    def __init__(self, slow_s: float = 3.0, delay_s: float = 0.1) -> None:
        self.slow_s = slow_s
        self.delay_s = delay_s
        self.default: Action = "ok"
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompts: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self._script: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.state = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def script(self, *actions: str) -> None:
        """Queue actions for the next requests, in arrival order."""
        with self._lock:
            self._script.extend(actions)

    def start(self) -> "LLMServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_action(self, labels: list[str]) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.default(labels) if callable(self.default) else self.default

    def _enter(self, body: dict[str, Any], prompt: str) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.prompts.append(prompt)
            self.bodies.append(body)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    """Serves one request according to the owning :class:`LLMServer`'s script."""

    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> LLMServer:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if not self.path.endswith("/chat/completions"):
            self._send(404, {"error": {"message": "not found"}})
            return
        body = json.loads(raw or b"{}")
        prompt = body.get("messages", [{}])[-1].get("content", "")
        self.state._enter(body, prompt)
        try:
            self._respond(body, labels_from_prompt(prompt))
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.state._leave()

    def _respond(self, body: dict[str, Any], labels: list[str]) -> None:
        state = self.state
        action = state._next_action(labels)
        model = body.get("model", "test-model")
        if action in ("slow", "delay"):
            state._stop.wait(state.slow_s if action == "slow" else state.delay_s)
            action = "ok"
        if action in ("429", "500", "503", "401"):
            self._send(int(action), {"error": {"message": f"scripted {action}", "type": "test"}})
        elif action == "bad_json":
            self._send_raw(200, b'{"id": "x", "choices": [', "application/json")
        elif action == "empty":
            self._send(200, _completion("", model))
        elif action == "no_choices":
            self._send(200, {"id": "x", "object": "chat.completion", "model": model})
        elif action == "missing_label":
            self._send(200, _completion(_sentence(labels[1:]), model))
        elif action == "ok":
            self._send(200, _completion(_sentence(labels), model))
        else:
            raise ValueError(f"unknown scripted action {action!r}")

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json")

    def _send_raw(self, status: int, data: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def serve() -> Iterator[LLMServer]:
    """Generator body for a pytest fixture: start a server, yield it, stop it."""
    srv = LLMServer().start()
    try:
        yield srv
    finally:
        srv.stop()
