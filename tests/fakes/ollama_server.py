"""A fake Ollama server speaking the documented /api/tags, /api/show and /api/chat wire format."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from fakes import FakeHandler, FakeServer


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def word_vector(text: str, size: int = 16) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words point the same way."""
    vector = [0.0] * size
    for word in text.lower().split():
        vector[sum(word.encode()) % size] += 1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


def _full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class _OllamaHandler(FakeHandler):
    fake: FakeOllama

    def do_GET(self) -> None:
        self.fake.requests.append(("GET", self.path, None))
        if self.path == "/api/tags":
            self.send_json(200, {"models": [self.fake.tag(name) for name in self.fake.models]})
        elif self.path == "/api/version":
            self.send_json(200, {"version": "0.0.0-fake"})
        elif self.path == "/":
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self.read_json()
        self.fake.requests.append(("POST", self.path, body))
        if self.path == "/api/show":
            self._show(body)
        elif self.path == "/api/chat":
            self._chat(body)
        elif self.path == "/api/embed":
            self._embed(body)
        else:
            self.send_json(404, {"error": "not found"})

    def _embed(self, body: dict[str, Any]) -> None:
        """Ollama's /api/embed: one vector per input, here derived from the words it contains."""
        model = str(body.get("model", ""))
        if not self._known(model):
            self._not_found(model)
            return
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        self.send_json(
            200,
            {"model": model, "embeddings": [word_vector(text) for text in texts]},
        )

    def _known(self, model: str) -> bool:
        return _full_name(model) in {_full_name(name) for name in self.fake.models}

    def _not_found(self, model: str) -> None:
        self.send_json(404, {"error": f'model "{model}" not found, try pulling it first'})

    def _show(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or body.get("name") or "")
        if not self._known(model):
            self._not_found(model)
            return
        self.send_json(
            200,
            {
                "modelfile": f"FROM {model}",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": {"family": "llama", "format": "gguf", "parameter_size": "3.2B"},
                "model_info": {"general.architecture": "llama", "llama.context_length": 131072},
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or "")
        if not self._known(model):
            self._not_found(model)
            return
        pieces = self.fake.reply_pieces()
        counts = {
            "total_duration": 1_000_000,
            "load_duration": 1_000,
            "prompt_eval_count": sum(
                len(str(m.get("content", "")).split()) for m in body.get("messages", [])
            ),
            "prompt_eval_duration": 1_000,
            "eval_count": len(pieces),
            "eval_duration": 1_000,
        }
        if not body.get("stream", True):
            self.send_json(
                200,
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "done": True,
                    "done_reason": "stop",
                    **counts,
                },
            )
            return
        self.start_chunked("application/x-ndjson")
        if self.fake.stall_s and self.fake.stop_event.wait(self.fake.stall_s):
            return  # the test ended while we stalled
        for piece in pieces:
            line = {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            self.write_chunk(json.dumps(line).encode() + b"\n")
            if self.fake.token_delay_s:
                time.sleep(self.fake.token_delay_s)
        final = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            **counts,
        }
        self.write_chunk(json.dumps(final).encode() + b"\n")
        self.end_chunked()


class FakeOllama(FakeServer):
    """Ollama with `models` pulled, answering every chat with `reply`, word by word.

    `stall_s` holds a streamed chat after its headers for that long (a model still loading);
    `token_delay_s` spaces the streamed lines.
    """

    handler = _OllamaHandler

    def __init__(
        self,
        models: tuple[str, ...] = ("llama3.2:latest",),
        reply: str = "Paris is the capital of France.",
        stall_s: float = 0.0,
        token_delay_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.models = list(models)
        self.reply = reply
        self.stall_s = stall_s
        self.token_delay_s = token_delay_s

    def reply_pieces(self) -> list[str]:
        words = self.reply.split(" ")
        return [word + " " for word in words[:-1]] + [words[-1]]

    def tag(self, name: str) -> dict[str, Any]:
        full = _full_name(name)
        return {
            "name": full,
            "model": full,
            "modified_at": _now(),
            "size": 2_019_393_189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "format": "gguf",
                "family": "llama",
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        }

    def chat_requests(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if path == "/api/chat"]
