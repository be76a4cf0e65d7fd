"""Where the step cache's results are kept: one file per result under Prefect's local
storage path (``PREFECT_LOCAL_STORAGE_PATH``; Orchestra sets it beside the ledger), as
Prefect's own default storage keeps them, by :class:`ResultFiles`, a ``LocalFileSystem``
that finds a result's path without ``Path.resolve`` and writes it in one thread hop.

Prefect's result store asks its storage for a result's path five times per task run
(the cache lookup, the record, the write), and ``LocalFileSystem`` resolves the base
path and the key each time (a ``realpath``: an ``lstat`` per path component); a write
is three thread hops (open, write, close). Here the base path is resolved once per
process, and a key that is one plain file name (a cache key, a ``uuid4().hex``) is
joined to it; any other path (``..``, a separator, ``~``) goes through Prefect's own
check. The write is one hop on anyio's worker threads, as Prefect's writes are, never
on the loop's default executor: asyncio resolves new connections' host names there
(six threads on two cores), and a write queued there would delay them. The files, and
the records in them, are the ones Prefect's default storage writes: a cache written
by either is read by the other.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import anyio.to_thread
from prefect.filesystems import LocalFileSystem

__all__ = ["ResultFiles", "result_files"]

# One file name: no separator, not "." or "..", no leading dot or "~".
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


@functools.lru_cache(maxsize=8)
def _resolved(basepath: str) -> Path:
    return Path(basepath).expanduser().resolve()


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(exist_ok=True, parents=True)
    with open(path, "wb") as f:
        f.write(content)


class ResultFiles(LocalFileSystem):
    """``LocalFileSystem`` for an absolute base path, its paths found once."""

    _block_type_name = "Orchestra Result Files"

    def _resolve_path(self, path: str | None) -> Path:
        if not self.basepath or not os.path.isabs(os.path.expanduser(self.basepath)):
            return super()._resolve_path(path)  # relative to the working directory, which can change
        base = _resolved(self.basepath)
        if path is None or path == "":
            return base
        name = str(path)
        if _PLAIN.fullmatch(name):
            return base / name
        prefix = f"{base}{os.sep}"
        if name.startswith(prefix) and _PLAIN.fullmatch(name[len(prefix):]):
            return Path(name)
        return super()._resolve_path(path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        resolved = self._resolve_path(path)
        await anyio.to_thread.run_sync(_write, resolved, content)
        return str(resolved)


@functools.lru_cache(maxsize=8)
def result_files(basepath: str) -> ResultFiles:
    """The step results' storage under ``basepath`` (one instance per path)."""
    return ResultFiles(basepath=basepath)
