"""Wire-protocol fakes of LLM providers (see docs/architecture.md, "tests/fakes/").

Imported lazily so that ``python -m tests.fakes.openai_server`` runs without a
"found in sys.modules" warning.
"""

from typing import TYPE_CHECKING

__all__ = ["OpenAIFake", "AnthropicFake"]

if TYPE_CHECKING:
    from .anthropic_server import AnthropicFake
    from .openai_server import OpenAIFake


def __getattr__(name: str):
    if name == "OpenAIFake":
        from .openai_server import OpenAIFake
        return OpenAIFake
    if name == "AnthropicFake":
        from .anthropic_server import AnthropicFake
        return AnthropicFake
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
