"""Shared class-level metadata for Orchestra's block types (no behaviour)."""

from __future__ import annotations

from pydantic import ConfigDict, HttpUrl

# Prefect's own repository-hosted block logos, at the commit Prefect 3.8.8 itself
# points its built-in blocks at (all 256x256 PNGs).
_PREFECT_LOGOS = (
    "https://raw.githubusercontent.com/PrefectHQ/prefect/"
    "420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/"
)


def prefect_logo(name: str) -> HttpUrl:
    return HttpUrl(_PREFECT_LOGOS + name)


# Blocks keep Prefect's `extra="allow"` (block documents carry bookkeeping keys);
# validation errors never echo the input, so a secret typed into the wrong
# field cannot end up in a traceback or a log line.
BLOCK_CONFIG = ConfigDict(hide_input_in_errors=True)
