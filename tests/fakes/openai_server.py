"""A fake OpenAI-compatible server: /v1/models and /v1/chat/completions, plain or SSE-streamed."""

from __future__ import annotations

import json
import time
from typing import Any

from fakes import FakeHandler, FakeServer


class _OpenAIHandler(FakeHandler):
    fake: FakeOpenAI

    def _authorised(self) -> bool:
        if self.fake.api_key is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.fake.api_key}":
            return True
        self.send_json(
            401,
            {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
        )
        return False

    def do_GET(self) -> None:
        self.fake.requests.append(("GET", self.path, None))
        if self.path != "/v1/models":
            self.send_json(404, {"error": {"message": "not found", "type": "not_found"}})
            return
        if not self._authorised():
            return
        created = int(time.time())
        self.send_json(
            200,
            {
                "object": "list",
                "data": [
                    {"id": model, "object": "model", "created": created, "owned_by": "fake"}
                    for model in self.fake.models
                ],
            },
        )

    def do_POST(self) -> None:
        body = self.read_json()
        self.fake.requests.append(("POST", self.path, body))
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": "not found", "type": "not_found"}})
            return
        if not self._authorised():
            return
        model = str(body.get("model") or "")
        pieces = self.fake.reply_pieces()
        created = int(time.time())
        ident = f"chatcmpl-{len(self.fake.requests)}"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        if not body.get("stream"):
            self.send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        self.start_chunked("text/event-stream")
        if self.fake.stall_s and self.fake.stop_event.wait(self.fake.stall_s):
            return
        self.write_chunk(chunk({"role": "assistant", "content": ""}, None))
        for piece in pieces:
            self.write_chunk(chunk({"content": piece}, None))
        self.write_chunk(chunk({}, "stop"))
        self.write_chunk(b"data: [DONE]\n\n")
        self.end_chunked()


class FakeOpenAI(FakeServer):
    """An OpenAI-compatible server under /v1 serving `models`, answering with `reply`.

    With `api_key` set, requests without `Authorization: Bearer <api_key>` get HTTP 401.
    """

    handler = _OpenAIHandler

    def __init__(
        self,
        models: tuple[str, ...] = ("local-model",),
        reply: str = "Paris is the capital of France.",
        api_key: str | None = None,
        stall_s: float = 0.0,
    ) -> None:
        super().__init__()
        self.models = list(models)
        self.reply = reply
        self.api_key = api_key
        self.stall_s = stall_s

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def reply_pieces(self) -> list[str]:
        words = self.reply.split(" ")
        return [word + " " for word in words[:-1]] + [words[-1]]

    def chat_requests(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if path == "/v1/chat/completions"]
