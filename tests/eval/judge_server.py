"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the judge tests, answering from a tiny local HF model.

POST /v1/chat/completions joins the messages' contents into one text and answers whichever of "A", "B", "tie" the
model gives the highest log-probability after it (`answer_logprobs`: plain torch, one sequence at a time, full
logits and log_softmax, nothing shared with alignctl). GET /v1/models lists the one served model; an unknown model
gets a 404 as OpenAI sends it, a wrong key a 401. For the tests it counts requests, records how many chat requests
were in flight at once, and plays `Fault`s: the next chat requests fail with a status, sleep past the client's
timeout, or answer a given text. Not a test module (pytest collects test_*.py only).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

ANSWERS = ("A", "B", "tie")


def answer_logprobs(model: Any, tokenizer: Any, text: str) -> dict[str, float]:
    """log p(answer | text) for each answer: the answer follows `text` after one space (none when `text` ends in
    whitespace), encoded apart from it; the sum of its tokens' log-probs from the full logits, in float64."""
    context = tokenizer(text)["input_ids"]
    out = {}
    for answer in ANSWERS:
        tail = tokenizer(("" if text[-1:].isspace() else " ") + answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context + tail])).logits[0].double()
        logps = torch.log_softmax(logits, -1)
        out[answer] = sum(logps[len(context) - 1 + j, token].item() for j, token in enumerate(tail))
    return out


def choose(logps: dict[str, float]) -> str:
    """The answer with the highest log-prob (the first of A, B, tie on an exact tie)."""
    return max(ANSWERS, key=logps.__getitem__)


@dataclass
class Fault:
    """What the server does to one chat request instead of answering: reply `status` (with `headers`), sleep
    `sleep_s` first (past the client's timeout), or answer `content`. Empty (Fault()): answer normally."""

    status: int | None = None
    sleep_s: float = 0.0
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class JudgeServer:
    """Serves `model_name` from (model, tokenizer) on 127.0.0.1:<free port> in a thread; `url` is the base URL."""

    def __init__(self, model: Any, tokenizer: Any, model_name: str = "tiny-judge", api_key: str | None = None,
                 delay_s: float = 0.0) -> None:  # fmt: skip
        self.model, self.tokenizer, self.model_name, self.api_key = model, tokenizer, model_name, api_key
        self.delay_s = delay_s  # every chat request waits this long (so concurrent ones overlap)
        self.faults: deque[Fault] = deque()
        self.requests: Counter[str] = Counter()  # "chat", "models", "other"
        self.prompts: list[str] = []  # the texts of the chat requests answered
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._stop = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)  # quick shutdown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes sleeping handlers
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def inject(self, *faults: Fault) -> None:
        """Queue faults for the next chat requests, one each, in order."""
        with self._lock:
            self.faults.extend(faults)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0

    # ---- used by the handler

    def next_fault(self) -> Fault:
        with self._lock:
            return self.faults.popleft() if self.faults else Fault()

    def enter(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1
            if kind == "chat":
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def reply(self, text: str) -> str:
        with self._model_lock:
            self.prompts.append(text)
            return choose(answer_logprobs(self.model, self.tokenizer, text))


def _error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error body."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
    }


def _handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                server.enter("other")
                return self._send(404, _error(404, f"no route {self.path}"))
            server.enter("models")
            if not self._authorized():
                return None
            model = {"id": server.model_name, "object": "model", "created": 0, "owned_by": "tests"}
            self._send(200, {"object": "list", "data": [model]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                server.enter("other")
                return self._send(404, _error(404, f"no route {self.path}"))
            server.enter("chat")
            self.counted = True  # in flight until its reply starts (_send): a client may ask again the moment it has it
            try:
                self._chat(body)
            finally:
                self._left()

        def _left(self) -> None:
            if getattr(self, "counted", False):
                self.counted = False
                server.leave()

        def _chat(self, body: dict[str, Any]) -> None:
            fault = server.next_fault()
            server.wait(server.delay_s + fault.sleep_s)
            if not self._authorized():
                return
            if fault.status is not None:
                return self._send(fault.status, _error(fault.status, "injected fault"), fault.headers)
            if body.get("model") != server.model_name:
                message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
                return self._send(404, _error(404, message, "model_not_found"))
            text = "\n\n".join(str(m.get("content", "")) for m in body.get("messages", []))
            content = fault.content if fault.content is not None else server.reply(text)
            self._send(200, _completion(server.model_name, content))

        def _authorized(self) -> bool:
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error(401, "Incorrect API key provided.", "invalid_api_key"))
            return False

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self._left()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

    return Handler
