"""OpenAI Chat Completions at the wire: ``POST /v1/chat/completions`` (plain and SSE),
``GET /v1/models``. Run alone: ``python -m tests.fakes.openai_server --port 0``."""

from __future__ import annotations

import json
import secrets
import time

from aiohttp import web

from .base import TOOL_NAME, FakeServer, History, Reply, RequestError, main, split_json, split_text, text_of

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

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        kind, code = _ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}

    # ---- tools -----------------------------------------------------------------------

    def offered_tools(self, body: dict) -> list[str]:
        tools = body.get("tools")
        if tools is None:
            return []
        if not isinstance(tools, list) or not tools:
            raise RequestError("Invalid 'tools': empty array. Expected an array with minimum length 1, "
                               "but got an empty array instead.", "tools")
        names = []
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or t.get("type") != "function" or "name" not in fn:
                raise RequestError(f"Missing required parameter: 'tools[{i}].function'.", f"tools[{i}].function")
            if not isinstance(fn["name"], str) or not TOOL_NAME.match(fn["name"]):
                raise RequestError(f"Invalid 'tools[{i}].function.name': string does not match pattern. Expected "
                                   "a string that matches the pattern '^[a-zA-Z0-9_-]+$'.", f"tools[{i}].function.name")
            names.append(fn["name"])
        return names

    def history(self, body: dict) -> History:
        h, pending, asked_at, last_assistant = History(), [], 0, -1
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        for i, m in enumerate(messages):
            role = m.get("role")
            if role != "tool" and pending:
                raise _unanswered(asked_at, pending)
            if role == "assistant":
                last_assistant = len(h.results)
                calls = m.get("tool_calls") or []
                if calls:
                    h.rounds += 1
                    pending, asked_at = [c.get("id") for c in calls if isinstance(c, dict)], i
            elif role == "tool":
                call_id = m.get("tool_call_id")
                if not call_id:
                    raise RequestError("Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                                       "'tool_call_id'.", f"messages.[{i}].tool_call_id")
                if call_id not in pending:
                    raise RequestError("Invalid parameter: messages with role 'tool' must be a response to a "
                                       "preceeding message with 'tool_calls'.", f"messages.[{i}].role")
                pending.remove(call_id)
                h.results.append({"id": call_id, "text": text_of(m.get("content")), "is_error": False})
        if pending:
            raise _unanswered(asked_at, pending)
        h.new_results = h.results[last_assistant:] if last_assistant >= 0 else h.results
        return h

    def tool_choice_none(self, body: dict) -> bool:
        return body.get("tool_choice") == "none"

    def new_call_id(self) -> str:
        return "call_" + secrets.token_hex(12)

    # ---- replies -----------------------------------------------------------------------

    def success(self, body: dict, reply: Reply, usage: dict) -> tuple[web.Response, bool]:
        inp, out = usage["input_tokens"], usage["output_tokens"]
        wire_usage = {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}}
        head = {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()),
                "model": body.get("model") or "", "system_fingerprint": None}
        text, finish = reply.text, "tool_calls" if reply.calls else "stop"
        tool_calls = [{"id": c["id"], "type": "function",
                       "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}} for c in reply.calls]
        if not body.get("stream"):
            content = text if text or not tool_calls else None
            message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return web.json_response({
                **head, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": wire_usage, "service_tier": "default",
            }), True

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head["object"] = "chat.completion.chunk"
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict, finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return "data: " + json.dumps({**head, "choices": [choice], **extra}) + "\n\n"

        events = [chunk({"role": "assistant", "content": "" if text or not tool_calls else None, "refusal": None})]
        events += [chunk({"content": piece}) for piece in split_text(text)] if text or not tool_calls else []
        for i, call in enumerate(tool_calls):  # id and name first, then the arguments in fragments
            fn = call["function"]
            events.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                 "function": {"name": fn["name"], "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                       for piece in split_json(fn["arguments"])]
        events.append(chunk({}, finish))
        if include_usage:
            events.append("data: " + json.dumps({**head, "choices": [], "usage": wire_usage}) + "\n\n")
        events.append("data: [DONE]\n\n")
        return web.Response(body="".join(events).encode(), content_type="text/event-stream",
                            headers={"cache-control": "no-cache"}), include_usage


def _unanswered(i: int, pending: list) -> RequestError:
    return RequestError("An assistant message with 'tool_calls' must be followed by tool messages responding to "
                        "each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                        + ", ".join(map(str, pending)), f"messages.[{i}].role")


if __name__ == "__main__":
    main(OpenAIFake)
