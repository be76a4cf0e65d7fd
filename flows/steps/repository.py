""""The repository" of a workflow: what container mounts and command steps may read.

* A workflow read from a file: the git repository that holds the file (the nearest
  folder above it with a ``.git``), else the file's own folder.
* An inline workflow (a dict, YAML text, a ``/run-graph`` body): the worker's working
  directory (a deployment's runs start in the checkout ``prefect deploy`` recorded).

Paths in a workflow (a container's ``mounts:`` keys, a command's ``workdir:``) are
relative to it. The spec refuses absolute host paths and ``..`` (``flows.spec.models``);
:func:`inside` also resolves symlinks, so a link that points out of the repository is
refused too, at validation (a workflow file) and again when the step runs.

:func:`content_digest` is what a container step's cache key holds of a mounted folder
and a command step's of its working folder: a hash of every file's path, mode and bytes
(``.git`` left out, as it is from a mount).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["repository", "inside", "content_digest", "EXCLUDED", "PathProblem"]

EXCLUDED = (".git",)  # never mounted, never hashed


class PathProblem(ValueError):
    """A path that leaves the repository or does not exist in it."""


def repository(wf: Any) -> Path:
    """The repository of ``wf`` (see the module docstring), resolved."""
    source = getattr(wf, "source", None)
    if source:
        path = Path(source).expanduser()
        if path.is_file():
            folder = path.resolve().parent
            for candidate in (folder, *folder.parents):
                if (candidate / ".git").exists():
                    return candidate
            return folder
    return Path.cwd().resolve()


def inside(repo: Path, rel: str, what: str, *, folder: bool = True) -> Path:
    """``repo / rel`` resolved (symlinks followed); PathProblem when it leaves ``repo``
    or does not exist (``folder``: must be a folder)."""
    root = repo.resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise PathProblem(f"{what} {rel!r} leaves the repository {root} (through a symbolic link)")
    if not target.exists():
        raise PathProblem(f"{what} {rel!r} does not exist in the repository {root}")
    if folder and not target.is_dir():
        raise PathProblem(f"{what} {rel!r} is not a folder of the repository {root}")
    return target


def content_digest(path: Path) -> str:
    """sha256 of a folder's files (relative path, mode, bytes; symlinks by their target),
    in a stable order, ``EXCLUDED`` names left out. Reads every file: blocking."""
    digest = hashlib.sha256()
    root = Path(path)
    for top, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED)
        rel_top = os.path.relpath(top, root)
        for name in sorted(files):
            if name in EXCLUDED:
                continue
            full = os.path.join(top, name)
            rel = os.path.normpath(os.path.join(rel_top, name))
            st = os.lstat(full)
            digest.update(f"{rel}\0{st.st_mode:o}\0".encode("utf-8", "surrogateescape"))
            if os.path.islink(full):
                digest.update(os.readlink(full).encode("utf-8", "surrogateescape"))
            else:
                with open(full, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            digest.update(b"\0")
        for name in dirs:  # empty folders count too
            digest.update(f"{os.path.normpath(os.path.join(rel_top, name))}/\0".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()
