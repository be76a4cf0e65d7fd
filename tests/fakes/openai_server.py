"""OpenAI Chat Completions at the wire: ``POST /v1/chat/completions`` (plain and SSE),
``GET /v1/models``. Run alone: ``python -m tests.fakes.openai_server --port 0``."""

from __future__ import annotations

import json
import secrets
import time

from aiohttp import web

from .base import FakeServer, main, split_text

_ERROR_KINDS = {  # status -> (type, code), as the OpenAI API sends them
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


class OpenAIFake(FakeServer):
    name = "openai"
    api_prefix = "/v1"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.handle_api)
        app.router.add_get("/v1/models", self._models)

    def models_body(self) -> dict:
        ids = ("gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini")
        return {"object": "list",
                "data": [{"id": i, "object": "model", "created": 1700000000, "owned_by": "openai"} for i in ids]}

    def error_body(self, status: int, message: str) -> dict:
        kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def success(self, body: dict, text: str, usage: dict) -> tuple[web.Response, bool]:
        inp, out = usage["input_tokens"], usage["output_tokens"]
        wire_usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}}
        head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()),
                "model": body.get("model") or "", "system_fingerprint": None}
        if not body.get("stream"):
            return web.json_response({
                **head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": wire_usage, "service_tier": "default",
            }), True

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head["object"] = "chat.completion.chunk"
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict, finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return "data: " + json.dumps({**head, "choices": [choice], **extra}) + "\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in split_text(text)]
        events.append(chunk({}, "stop"))
        if include_usage:
            events.append("data: " + json.dumps({**head, "choices": [], "usage": wire_usage}) + "\n\n")
        events.append("data: [DONE]\n\n")
        return web.Response(body="".join(events).encode(), content_type="text/event-stream",
                            headers={"cache-control": "no-cache"}), include_usage


if __name__ == "__main__":
    main(OpenAIFake)
