"""Wire-protocol fakes of LLM providers and an MCP server (see docs/architecture.md,
"tests/fakes/", and the docstrings of base.py and mcp_server.py).

Imported lazily so that ``python -m tests.fakes.openai_server`` runs without a
"found in sys.modules" warning.
"""

from typing import TYPE_CHECKING

__all__ = ["OpenAIFake", "AnthropicFake", "MCPFake"]

if TYPE_CHECKING:
    from .anthropic_server import AnthropicFake
    from .mcp_server import MCPFake
    from .openai_server import OpenAIFake


def __getattr__(name: str):
    if name == "OpenAIFake":
        from .openai_server import OpenAIFake
        return OpenAIFake
    if name == "AnthropicFake":
        from .anthropic_server import AnthropicFake
        return AnthropicFake
    if name == "MCPFake":
        from .mcp_server import MCPFake
        return MCPFake
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
