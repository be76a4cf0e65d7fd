"""Anthropic Messages at the wire: ``POST /v1/messages`` (plain and SSE), ``GET /v1/models``.
Run alone: ``python -m tests.fakes.anthropic_server --port 0``."""

from __future__ import annotations

import json
import secrets

from aiohttp import web

from .base import TOOL_NAME, FakeServer, History, Reply, RequestError, main, split_json, split_text, text_of

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

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    # ---- tools -----------------------------------------------------------------------

    def offered_tools(self, body: dict) -> list[str]:
        tools = body.get("tools")
        if tools is None:
            return []
        if not isinstance(tools, list):
            raise RequestError("tools: Input should be a valid list")
        names = []
        for i, t in enumerate(tools):
            if not isinstance(t, dict):
                raise RequestError(f"tools.{i}: Input should be a valid dictionary")
            if t.get("type") not in (None, "custom"):  # a server tool (web_search_..., bash_...): not ours to run
                continue
            if not isinstance(t.get("name"), str) or not TOOL_NAME.match(t["name"]):
                raise RequestError(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if not isinstance(t.get("input_schema"), dict):
                raise RequestError(f"tools.{i}.custom.input_schema: Field required")
            names.append(t["name"])
        return names

    def history(self, body: dict) -> History:
        h, pending, last_assistant = History(), [], -1
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        for i, m in enumerate(messages):
            blocks = [b for b in m.get("content") if isinstance(b, dict)] if isinstance(m.get("content"), list) else []
            results = [(j, b) for j, b in enumerate(blocks) if b.get("type") == "tool_result"]
            answered = {b.get("tool_use_id") for _, b in results}
            if pending and (m.get("role") != "user" or not set(pending) <= answered):
                raise RequestError(f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                                   f"immediately after: {', '.join(x for x in pending if x not in answered)}. Each "
                                   "`tool_use` block must have a corresponding `tool_result` block in the next message.")
            for j, b in results:
                if b.get("tool_use_id") not in pending:
                    raise RequestError(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                                       f"blocks: {b.get('tool_use_id')}. Each `tool_result` block must have a "
                                       "corresponding `tool_use` block in the previous message.")
                h.results.append({"id": b["tool_use_id"], "text": text_of(b.get("content")),
                                  "is_error": bool(b.get("is_error"))})
            pending = []
            if m.get("role") == "assistant":
                last_assistant = len(h.results)
                pending = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
                h.rounds += bool(pending)
        if pending:
            raise RequestError(f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` "
                               f"blocks immediately after: {', '.join(map(str, pending))}. Each `tool_use` block "
                               "must have a corresponding `tool_result` block in the next message.")
        h.new_results = h.results[last_assistant:] if last_assistant >= 0 else h.results
        return h

    def tool_choice_none(self, body: dict) -> bool:
        return (body.get("tool_choice") or {}).get("type") == "none"

    def new_call_id(self) -> str:
        return "toolu_" + secrets.token_hex(12)

    # ---- replies -----------------------------------------------------------------------

    def success(self, body: dict, reply: Reply, usage: dict) -> tuple[web.Response, bool]:
        wire_usage = {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"],
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        content = [{"type": "text", "text": reply.text}] if reply.text or not reply.calls else []
        content += [{"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                    for c in reply.calls]
        stop = "tool_use" if reply.calls else "end_turn"
        message = {"id": "msg_" + secrets.token_hex(12), "type": "message", "role": "assistant",
                   "model": body.get("model") or "", "content": content,
                   "stop_reason": stop, "stop_sequence": None, "usage": wire_usage}
        if not body.get("stream"):
            return web.json_response(message), True

        start = {**message, "content": [], "stop_reason": None, "usage": {**wire_usage, "output_tokens": 1}}
        events = [_event("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(content):
            if block["type"] == "text":
                first, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": piece}
                                                               for piece in split_text(block["text"])]
            else:  # the input arrives as JSON fragments
                first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                deltas = [{"type": "input_json_delta", "partial_json": piece}
                          for piece in split_json(json.dumps(block["input"]))]
            events.append(_event("content_block_start", {"type": "content_block_start", "index": i,
                                                         "content_block": first}))
            if i == 0:
                events.append(_event("ping", {"type": "ping"}))
            events += [_event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
                       for d in deltas]
            events.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
        events += [_event("message_delta", {"type": "message_delta",
                                            "delta": {"stop_reason": stop, "stop_sequence": None},
                                            "usage": {"output_tokens": usage["output_tokens"]}}),
                   _event("message_stop", {"type": "message_stop"})]
        return web.Response(body="".join(events).encode(), content_type="text/event-stream",
                            headers={"cache-control": "no-cache"}), True


if __name__ == "__main__":
    main(AnthropicFake)
