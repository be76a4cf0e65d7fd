"""Anthropic Messages at the wire: ``POST /v1/messages`` (plain and SSE), ``GET /v1/models``.
Run alone: ``python -m tests.fakes.anthropic_server --port 0``."""

from __future__ import annotations

import json
import secrets

from aiohttp import web

from .base import FakeServer, main, split_text

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


class AnthropicFake(FakeServer):
    name = "anthropic"
    api_prefix = ""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.handle_api)
        app.router.add_get("/v1/models", self._models)

    def models_body(self) -> dict:
        ids = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
        data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"} for i in ids]
        return {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}

    def error_body(self, status: int, message: str) -> dict:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def success(self, body: dict, text: str, usage: dict) -> tuple[web.Response, bool]:
        wire_usage = {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"],
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        message = {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
                   "model": body.get("model") or "", "content": [{"type": "text", "text": text}],
                   "stop_reason": "end_turn", "stop_sequence": None, "usage": wire_usage}
        if not body.get("stream"):
            return web.json_response(message), True

        start = {**message, "content": [], "stop_reason": None, "usage": {**wire_usage, "output_tokens": 1}}
        events = [_event("message_start", {"type": "message_start", "message": start}),
                  _event("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}}),
                  _event("ping", {"type": "ping"})]
        events += [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}})
                   for piece in split_text(text)]
        events += [_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   _event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                            "usage": {"output_tokens": usage["output_tokens"]}}),
                   _event("message_stop", {"type": "message_stop"})]
        return web.Response(body="".join(events).encode(), content_type="text/event-stream",
                            headers={"cache-control": "no-cache"}), True


if __name__ == "__main__":
    main(AnthropicFake)
