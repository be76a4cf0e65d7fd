"""A wire-level double of the Dagger engine, for the real ``dagger-io`` SDK (0.21.x).

The SDK, when ``DAGGER_SESSION_PORT``/``DAGGER_SESSION_TOKEN`` are set, skips the CLI
and talks GraphQL over HTTP to ``http://127.0.0.1:PORT/query`` with the session token as
the HTTP Basic user. It first introspects the schema (it builds every query from it),
then asks ``version``, then sends one document per awaited call, e.g.
``{container{from(address:"python:3.12-slim"){withExec(args:["python","-V"]){stdout}}}}``.
Objects passed as arguments (a secret, a directory, a cache volume) are first turned
into IDs with ``{...{id}}`` queries; ``sync`` returns an ID that later queries load with
``node(id:"..."){... on Container{...}}``.

This double serves that protocol with graphql-core and a small schema (``SDL`` below:
only the fields the container step uses; anything else is a GraphQL validation error,
and unsupported options of supported fields are refused with a message saying so).

    with DaggerEngineFake(pull_fail={"bad:image"}) as engine:
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(engine.port))   # or engine.env
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", engine.token)
        ...  # dagger.Connection() / dagger.connection() as usual

or ``python -m tests.fakes.dagger_engine --port 0`` (prints
``READY http://127.0.0.1:PORT TOKEN``; control endpoints under ``/_fake/``).

How a container is emulated (the image itself is never pulled)
---------------------------------------------------------------
* ``from(address)`` only records the image. The "image" is the host's system
  directories, bound read-only: ``/usr``, ``/etc`` and the ``/bin``, ``/sbin``, ``/lib*``
  symlinks or folders. For images whose name starts with ``python`` (``python:3.12-slim``...),
  ``/usr/local/bin`` holds ``python``/``python3`` pointing at the host's base interpreter
  (the one running this double, without its virtualenv), and ``LANG=C.UTF-8`` is set as
  those images do. Other host paths (``/home``, ``/root``, ``/work``, the host's ``/tmp``...)
  are not visible unless mounted.
* Everything else is the container's own writable layer: a folder under the double's
  state dir bound at ``/``. So ``/tmp``, ``/out``, ``/root``, the workdir... are private and
  writable, persist from one ``withExec`` to the next of the same pipeline (each exec runs
  on a copy of the previous layer) and can be read back with ``file(path)``. The first
  layer has an empty ``/tmp``, ``/var/tmp``, ``/root`` and ``/home``.
  Writing under the image directories fails (read-only); so does mounting under them.
* ``withMountedDirectory(path, host.directory(p, exclude=[...]))``: the host folder is
  snapshotted (copied, minus the excluded paths; dockerignore-like patterns) when its ID
  is taken, as the real engine uploads it then, and the snapshot is bound READ-ONLY at
  ``path``. (A real engine gives the container a writable copy unless ``readOnly``.)
* ``withMountedCache(path, cacheVolume(key))``: a per-key folder of the state dir, bound
  read-write; it persists for the life of the double (or across doubles sharing a
  ``state_dir``). As on a real engine, ``file()`` under a cache mount is refused.
* ``withExec(args)`` runs ``args`` under bubblewrap: the views above, a fresh /proc and
  /dev, no network, all namespaces unshared, cwd = the workdir (created if missing),
  environment = ``PATH`` (the Debian default) + the container's variables + its secret
  variables. A command missing from ``$PATH`` fails like the engine's init does (exit 1,
  ``exec: "x": executable file not found in $PATH``). Secret values are replaced by
  ``***`` in captured stdout/stderr, as the engine scrubs them.
* Exit codes: with the default ``expect`` a non-zero exit is a GraphQL error with
  ``extensions._type == "EXEC_ERROR"`` (+ ``cmd``, ``exitCode``, trimmed ``stdout``/``stderr``),
  which the SDK raises as ``dagger.ExecError``. ``ANY`` accepts 0-127 and 192-255,
  ``FAILURE`` accepts those minus 0.
* Like the engine's cache, a pipeline is run once: an exec whose inputs (image, args,
  env, secret, workdir, mounted snapshots, cache keys, previous layer) were seen before
  is not run again (the SDK re-sends the whole chain for ``stdout()`` then ``stderr()``).
  Failed execs are not cached. ``engine.execs`` lists what really ran.

Not emulated: the image's content and config (packages, ENV, ENTRYPOINT, CMD, USER:
commands run as root with the host's tools), ``withExec`` stdin/redirects/entrypoint/expand,
services and networking, ``include``/``gitignore`` of host directories, cache sharing
modes, other platforms, publishing/exporting images, and every API type not in ``SDL``.

Test knobs: ``fail_next(n, kind)`` makes the next n requests fail before anything runs
(the SDK's opening introspection included): "drop" closes the connection without an
answer, like an engine lost mid-request; "timeout" gives no answer for ``slow_seconds``,
then drops; an HTTP status gives an empty reply with that status. ``pull_fail`` is a set
of image references whose pull fails with the engine's error text. ``requests`` logs every
GraphQL document with ``setSecret(plaintext:)`` replaced by ``"***"`` (variables are not
logged); ``execs`` every process run: argv, env variable NAMES, mounts, exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import os
import platform
import posixpath
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from graphql import (
    ArgumentNode, GraphQLError, StringValueNode, Visitor, build_schema, graphql_sync, parse, print_ast, visit,
)


ENGINE_VERSION = "v0.21.11"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())

SDL = """
interface Node { id: ID! }
enum ReturnType { SUCCESS FAILURE ANY }
enum CacheSharingMode { SHARED PRIVATE LOCKED }
scalar Platform

type Query {
  version: String!
  container(platform: Platform): Container!
  host: Host!
  setSecret(name: String!, plaintext: String!): Secret!
  cacheVolume(key: String!, source: ID, sharing: CacheSharingMode = SHARED, owner: String = ""): CacheVolume!
  node(id: ID!): Node
}
type Host {
  directory(path: String!, exclude: [String!] = [], include: [String!] = [], noCache: Boolean = false,
            gitignore: Boolean = false): Directory!
}
type Directory implements Node { id: ID! sync: ID! }
type CacheVolume implements Node { id: ID! }
type Secret implements Node { id: ID! name: String! }
type File implements Node {
  id: ID!
  sync: ID!
  contents(offsetLines: Int, limitLines: Int): String!
  export(path: String!, allowParentDirPath: Boolean = false): String!
}
type Container implements Node {
  id: ID!
  sync: ID!
  from(address: String!, registryService: ID): Container!
  imageRef: String!
  workdir: String!
  withEnvVariable(name: String!, value: String!, expand: Boolean = false): Container!
  withSecretVariable(name: String!, secret: ID!): Container!
  withWorkdir(path: String!, expand: Boolean = false): Container!
  withMountedDirectory(path: String!, source: ID!, owner: String = "", readOnly: Boolean = false,
                       expand: Boolean = false): Container!
  withMountedCache(path: String!, cache: ID!, source: ID, sharing: CacheSharingMode = SHARED,
                   owner: String = "", expand: Boolean = false): Container!
  withExec(args: [String!]!, useEntrypoint: Boolean = false, stdin: String = "", redirectStdin: String = "",
           redirectStdout: String = "", redirectStderr: String = "", expect: ReturnType = SUCCESS,
           experimentalPrivilegedNesting: Boolean = false, insecureRootCapabilities: Boolean = false,
           expand: Boolean = false, noInit: Boolean = false): Container!
  stdout: String!
  stderr: String!
  exitCode: Int!
  file(path: String!, expand: Boolean = false): File!
}
"""


def _unsupported(field: str, **given: Any) -> None:
    """Refuse options the double does not emulate (their defaults are fine)."""
    bad = [k for k, v in given.items() if v not in (None, False, "", [], "SHARED")]
    if bad:
        raise GraphQLError(f"{field}: option(s) {', '.join(bad)} not supported by the Dagger engine double")


def normalize_ref(address: str) -> str:
    """``python:3.12-slim`` -> ``docker.io/library/python:3.12-slim`` (as the engine names it)."""
    name, at, digest = address.partition("@")
    first, slash, _ = name.partition("/")
    if not slash:
        name = "docker.io/library/" + name
    elif "." not in first and ":" not in first and first != "localhost":
        name = "docker.io/" + name
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name + at + digest


def _is_python(image: str | None) -> bool:
    return bool(image) and normalize_ref(image).rsplit("/", 1)[-1].startswith("python")


def _abs(workdir: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, path))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _scrub(text: str, values: list[str]) -> str:
    for value in values:
        for line in value.splitlines():
            if line.strip():
                text = text.replace(line, "***")
    return text


def _pattern(p: str) -> re.Pattern:
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out)


def excluder(patterns: list[str]):
    """dockerignore-like: a pattern matches a path relative to the folder or one of its
    parents; ``!pattern`` re-includes; the last matching pattern wins."""
    rules = []
    for raw in patterns:
        neg = raw.startswith("!")
        p = raw[1:] if neg else raw
        p = posixpath.normpath(p.strip().lstrip("/")).rstrip("/")
        if p and p != ".":
            rules.append((_pattern(p), neg))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for rx, neg in rules:
            if any(rx.fullmatch(x) for x in prefixes):
                result = not neg
        return result

    return excluded, any(neg for _, neg in rules)


# ---- the API's objects (immutable; an ID names one value) ------------------------------

@dataclass(frozen=True)
class Secret:
    TYPENAME = "Secret"
    name: str
    handle: str  # random; the value lives in DaggerEngineFake._secret_values

    def id(self, info):
        return info.context.register(self)


@dataclass(frozen=True)
class CacheVolume:
    TYPENAME = "CacheVolume"
    key: str

    def id(self, info):
        return info.context.register(self)


@dataclass(frozen=True)
class Directory:
    """A host folder as snapshotted when its ID was taken."""
    TYPENAME = "Directory"
    host_path: str
    digest: str

    def id(self, info):
        return info.context.register(self)

    sync = id


@dataclass(frozen=True)
class Exec:
    args: tuple[str, ...]
    expect: str
    image: str | None
    env: tuple[tuple[str, str, str], ...]          # (name, "plain"|"secret", value|handle)
    workdir: str
    mounts: tuple[tuple[str, Any], ...]            # (container path, Directory|CacheVolume)


@dataclass(frozen=True)
class Container:
    TYPENAME = "Container"
    image: str | None = None
    env: tuple[tuple[str, str, str], ...] = ()
    workdir: str = "/"
    mounts: tuple[tuple[str, Any], ...] = ()
    execs: tuple[Exec, ...] = ()

    def id(self, info):
        return info.context.register(self)

    def sync(self, info):
        info.context.evaluate(self)
        return info.context.register(self)

    def from_(self, info, address, registryService=None):
        _unsupported("from", registryService=registryService)
        info.context.pull(address)
        return Container(image=address)

    def imageRef(self, info):
        if self.image is None:
            raise GraphQLError("imageRef: the container has no image (call from first)")
        ref = normalize_ref(self.image)
        return f"{ref.split('@')[0]}@sha256:{hashlib.sha256(ref.encode()).hexdigest()}"

    def workdir_(self, info):
        return self.workdir

    def _with_env(self, name: str, kind: str, value: str) -> "Container":
        return replace(self, env=tuple(e for e in self.env if e[0] != name) + ((name, kind, value),))

    def withEnvVariable(self, info, name, value, expand=False):
        _unsupported("withEnvVariable", expand=expand)
        return self._with_env(name, "plain", value)

    def withSecretVariable(self, info, name, secret):
        return self._with_env(name, "secret", info.context.load(secret, Secret).handle)

    def withWorkdir(self, info, path, expand=False):
        _unsupported("withWorkdir", expand=expand)
        return replace(self, workdir=_abs(self.workdir, path))

    def _with_mount(self, path: str, source: Any) -> "Container":
        path = _abs(self.workdir, path)
        return replace(self, mounts=tuple(m for m in self.mounts if m[0] != path) + ((path, source),))

    def withMountedDirectory(self, info, path, source, owner="", readOnly=False, expand=False):
        _unsupported("withMountedDirectory", owner=owner, expand=expand)
        return self._with_mount(path, info.context.load(source, Directory))

    def withMountedCache(self, info, path, cache, source=None, sharing="SHARED", owner="", expand=False):
        _unsupported("withMountedCache", source=source, sharing=sharing, owner=owner, expand=expand)
        return self._with_mount(path, info.context.load(cache, CacheVolume))

    def withExec(self, info, args, useEntrypoint=False, stdin="", redirectStdin="", redirectStdout="",
                 redirectStderr="", expect="SUCCESS", experimentalPrivilegedNesting=False,
                 insecureRootCapabilities=False, expand=False, noInit=False):
        _unsupported("withExec", useEntrypoint=useEntrypoint, stdin=stdin, redirectStdin=redirectStdin,
                     redirectStdout=redirectStdout, redirectStderr=redirectStderr, expand=expand,
                     experimentalPrivilegedNesting=experimentalPrivilegedNesting,
                     insecureRootCapabilities=insecureRootCapabilities)
        if not args:
            raise GraphQLError("withExec: empty args (the engine double cannot run an image's default command)")
        ex = Exec(tuple(args), expect, self.image, self.env, self.workdir, self.mounts)
        return replace(self, execs=self.execs + (ex,))

    def _last(self, info, field: str) -> dict:
        if not self.execs:
            raise GraphQLError(f"{field}: no command has been executed in this container")
        return info.context.evaluate(self)[1]

    def stdout(self, info):
        return self._last(info, "stdout")["stdout"]

    def stderr(self, info):
        return self._last(info, "stderr")["stderr"]

    def exitCode(self, info):
        return self._last(info, "exitCode")["exit_code"]

    def file(self, info, path, expand=False):
        _unsupported("file", expand=expand)
        return File(self, _abs(self.workdir, path))


@dataclass(frozen=True)
class File:
    TYPENAME = "File"
    container: Container
    path: str

    def _host(self, info) -> Path:
        host = info.context.host_path(self.container, self.path, for_read=True)
        if host.is_dir():
            raise GraphQLError(f"path {self.path} is a directory, not a file")
        if not host.is_file():
            raise GraphQLError(f"lstat {self.path}: no such file or directory")
        return host

    def id(self, info):
        return info.context.register(self)

    def sync(self, info):
        self._host(info)
        return info.context.register(self)

    def contents(self, info, offsetLines=None, limitLines=None):
        text = self._host(info).read_bytes().decode("utf-8", "replace")
        if offsetLines is None and limitLines is None:
            return text
        lines = text.splitlines(keepends=True)[offsetLines or 0:]
        return "".join(lines if limitLines is None else lines[:limitLines])

    def export(self, info, path, allowParentDirPath=False):
        src = self._host(info)
        dest = Path(info.context.host_workdir, path).absolute()
        if dest.is_dir():
            if not allowParentDirPath:
                raise GraphQLError(f"destination {str(dest)!r} is a directory; must be a file path "
                                   "unless allowParentDirPath is set")
            dest = dest / posixpath.basename(self.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return str(dest)


class Host:
    def directory(self, info, path, exclude=(), include=(), noCache=False, gitignore=False):
        _unsupported("host.directory", include=include, gitignore=gitignore)
        return info.context.snapshot(path, list(exclude))


class Query:
    def version(self, info):
        return ENGINE_VERSION

    def container(self, info, platform=None):
        if platform not in (None, f"linux/{_ARCH}"):
            raise GraphQLError(f"container: platform {platform} not supported by the Dagger engine double")
        return Container()

    def host(self, info):
        return Host()

    def setSecret(self, info, name, plaintext):
        return info.context.secret(name, plaintext)

    def cacheVolume(self, info, key, source=None, sharing="SHARED", owner=""):
        _unsupported("cacheVolume", source=source, sharing=sharing, owner=owner)
        return CacheVolume(key)

    def node(self, info, id):
        return info.context.load(id, object)


def make_schema():
    """The schema with resolvers: the same-named method of each class (``from_`` etc. where
    the field name is taken), called as ``method(obj, info, **args)``."""
    schema = build_schema(SDL)
    schema.type_map["Node"].resolve_type = lambda obj, info, _t: obj.TYPENAME
    for cls in (Query, Host, Directory, CacheVolume, Secret, File, Container):
        for name, field in schema.type_map[cls.__name__].fields.items():
            method = getattr(cls, name + "_", None) or getattr(cls, name, None)
            if callable(method):  # else a dataclass attribute, read by the default resolver
                field.resolve = lambda _obj, _info, _m=method, **args: _m(_obj, _info, **args)
    return schema


class _MaskSecrets(Visitor):
    def enter_field(self, node, *_):
        if node.name.value == "setSecret":
            node.arguments = tuple(ArgumentNode(name=a.name, value=StringValueNode(value="***"))
                                   if a.name.value == "plaintext" else a for a in node.arguments)


def mask_document(query: str) -> str:
    """The document with every ``setSecret(plaintext:)`` literal replaced by ``"***"``."""
    try:
        doc = parse(query)
    except GraphQLError:
        return "<unparseable GraphQL document>"
    visit(doc, _MaskSecrets())
    return print_ast(doc)


# ---- the engine ------------------------------------------------------------------------

class DaggerEngineFake:
    """See the module docstring. ``state_dir`` (default: a temporary folder removed on
    stop) holds layers, snapshots and cache volumes; ``host_workdir`` is where relative host
    paths (``host.directory``, ``export``) resolve, as the engine's workdir does.

    Runs like the sibling fakes (tests/fakes/base.py), without depending on them: in a
    background thread (``with DaggerEngineFake() as engine`` / ``start()``/``stop()``) or
    in the foreground (``serve()``, used by ``python -m tests.fakes.dagger_engine``)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 pull_fail: set[str] | frozenset[str] = frozenset(), state_dir: str | Path | None = None,
                 host_workdir: str | Path | None = None) -> None:
        self.host, self.port = host, port
        self.token = token or secrets.token_urlsafe(24)
        self.pull_fail = {normalize_ref(p) for p in pull_fail}
        self.slow_seconds = 30.0  # how long a "timeout" fault keeps the client waiting
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="dagger-engine-double-")).absolute()
        self.host_workdir = str(Path(host_workdir or os.getcwd()).absolute())
        self.bwrap = shutil.which("bwrap")
        self._lock = threading.Lock()
        self._log: list[dict] = []
        self._faults: deque = deque()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._schema = make_schema()
        self._objects: dict[str, Any] = {}
        self._ids: dict[Any, str] = {}
        self._secret_values: dict[str, str] = {}
        self._secret_handles: dict[tuple[str, str], str] = {}
        self._memo: dict[str, tuple[Path, dict]] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._execs: list[dict] = []
        self._procs: set[subprocess.Popen] = set()
        self._counter = itertools.count(1)
        self._snap_lock = threading.Lock()
        self._empty_root = self.state_dir / "layers" / "empty"
        for sub, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700), ("home", 0o755)):
            (self._empty_root / sub).mkdir(parents=True, exist_ok=True)
            (self._empty_root / sub).chmod(mode)
        self._python_bin = self._make_python_bin()

    # ---- knobs and logs ---------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        return {"DAGGER_SESSION_PORT": str(self.port), "DAGGER_SESSION_TOKEN": self.token}

    def fail_next(self, n: int = 1, kind: Any = "drop") -> None:
        """The next ``n`` requests fail: "drop", "timeout" or an HTTP status (see module doc)."""
        if kind not in ("drop", "timeout") and not (isinstance(kind, int) and 400 <= kind <= 599):
            raise ValueError(f"bad fault {kind!r}: use 'drop', 'timeout' or an HTTP status 400-599")
        with self._lock:
            self._faults.extend([kind] * n)

    @property
    def requests(self) -> list[dict]:
        """One dict per POST /query: ``query`` (the document, secrets masked), ``status``
        (HTTP status, "drop" or "timeout") and ``errors`` (the GraphQL error messages or None)."""
        with self._lock:
            return [dict(e) for e in self._log]

    @property
    def execs(self) -> list[dict]:
        """One dict per process run: argv, image, workdir, env (names), secret_env (names),
        mounts (path, type, source, read_only) and exit_code."""
        with self._lock:
            return [dict(e) for e in self._execs]

    def reset(self) -> None:
        """Clear the request and exec logs and pending faults (cache volumes and the exec cache stay)."""
        with self._lock:
            self._log.clear()
            self._faults.clear()
            self._execs.clear()

    # ---- objects ----------------------------------------------------------------------

    def register(self, obj: Any) -> str:
        with self._lock:
            if obj not in self._ids:
                oid = f"{obj.TYPENAME}:{next(self._counter)}:{secrets.token_hex(4)}"
                self._ids[obj], self._objects[oid] = oid, obj
            return self._ids[obj]

    def load(self, oid: str, cls: type) -> Any:
        with self._lock:
            obj = self._objects.get(oid)
        if obj is None or not isinstance(obj, cls):
            want = "" if cls is object else f" of type {cls.__name__}"
            raise GraphQLError(f"invalid ID{want}: {oid[:40]!r}")
        return obj

    def secret(self, name: str, plaintext: str) -> Secret:
        with self._lock:
            handle = self._secret_handles.setdefault((name, plaintext), secrets.token_hex(16))
            self._secret_values[handle] = plaintext
        return Secret(name, handle)

    def pull(self, address: str) -> None:
        ref = normalize_ref(address)
        if ref in self.pull_fail:
            raise GraphQLError(
                f'failed to resolve image "{ref}" (platform: "linux/{_ARCH}"): failed to resolve source '
                f"metadata for {ref}: pull access denied, repository does not exist or may require "
                "authorization: server message: insufficient_scope: authorization failed")

    def snapshot(self, path: str, exclude: list[str]) -> Directory:
        """Copy a host folder (minus ``exclude``) into the state dir, once per content."""
        src = Path(self.host_workdir, path).absolute()
        if not src.is_dir():
            raise GraphQLError(f"host.directory: {src}: no such directory")
        excluded, has_negation = excluder(exclude)
        entries = []  # relative paths; folders end with "/"
        for top, dirs, files in os.walk(src):
            rel_top = os.path.relpath(top, src)
            for d in list(dirs):
                rel = posixpath.normpath(posixpath.join(rel_top, d))
                if os.path.islink(os.path.join(top, d)):
                    dirs.remove(d)
                    files.append(d)
                elif excluded(rel):
                    if not has_negation:  # nothing below can be re-included
                        dirs.remove(d)
                else:
                    entries.append(rel + "/")
            entries += [r for f in files if not excluded(r := posixpath.normpath(posixpath.join(rel_top, f)))]
        entries.sort()
        stat = []
        for e in entries:
            st = os.lstat(src / e.rstrip("/"))
            stat.append((e, st.st_mode, st.st_size, st.st_mtime_ns))
        digest = _digest(str(src), stat)[:32]
        dest = self.state_dir / "snapshots" / digest
        with self._snap_lock:
            if not dest.exists():
                tmp = dest.with_name(dest.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                for e in entries:
                    s, d = src / e.rstrip("/"), tmp / e.rstrip("/")
                    d.parent.mkdir(parents=True, exist_ok=True)
                    if e.endswith("/"):
                        d.mkdir(exist_ok=True)
                    elif s.is_symlink():
                        os.symlink(os.readlink(s), d)
                    else:
                        shutil.copy2(s, d)
                tmp.rename(dest)
        return Directory(str(src), digest)

    def cache_dir(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:40]
        path = self.state_dir / "caches" / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- the container filesystem view ----------------------------------------------

    def _make_python_bin(self) -> Path:
        path = self.state_dir / "image-python-bin"
        path.mkdir(exist_ok=True)
        exe = os.path.realpath(sys.executable)
        for name in ("python", "python3"):
            if not os.path.lexists(path / name):
                os.symlink(exe, path / name)
        return path

    def _image_binds(self, image: str | None) -> list[tuple[str, str]]:
        """(container path, host path) of the image's read-only directories, deepest first."""
        binds = [(d, d) for d in IMAGE_DIRS if os.path.lexists(d)]
        if _is_python(image):
            binds.append(("/usr/local/bin", str(self._python_bin)))
            prefix = os.path.realpath(sys.base_prefix)
            if not any(_under(prefix, d) for d in IMAGE_DIRS):
                binds.append((prefix, prefix))
        return sorted(binds, key=lambda b: -len(b[0]))

    def host_path(self, ctr: Container | Exec, path: str, *, for_read: bool = False, root: Path | None = None) -> Path:
        """Where container path ``path`` lives on the host (mounts, then image, then layer)."""
        for mpath, src in sorted(ctr.mounts, key=lambda m: -len(m[0])):
            if _under(path, mpath):
                if isinstance(src, CacheVolume):
                    if for_read:
                        raise GraphQLError(f"{path}: cannot retrieve path from cache")
                    base = self.cache_dir(src.key)
                else:
                    base = self.state_dir / "snapshots" / src.digest
                return base / posixpath.relpath(path, mpath)
        for cpath, hpath in self._image_binds(ctr.image):
            if _under(path, cpath):
                return Path(hpath) / posixpath.relpath(path, cpath)
        if root is None:
            root = self.evaluate(ctr)[0] if isinstance(ctr, Container) else self._empty_root
        return root / path.lstrip("/")

    # ---- evaluation -------------------------------------------------------------------

    def evaluate(self, ctr: Container) -> tuple[Path, dict | None]:
        """Run the container's execs (each once per distinct input); its layer and last result."""
        root, last, key = self._empty_root, None, _digest(ctr.image)
        for ex in ctr.execs:
            mounts = [(p, "cache", s.key) if isinstance(s, CacheVolume) else (p, "dir", s.digest) for p, s in ex.mounts]
            key = _digest(key, ex.args, ex.expect, ex.env, ex.workdir, mounts)
            with self._lock:
                lock = self._key_locks.setdefault(key, threading.Lock())
            with lock:
                if key not in self._memo:
                    layer = self.state_dir / "layers" / key[:32]
                    shutil.rmtree(layer, ignore_errors=True)
                    shutil.copytree(root, layer, symlinks=True)
                    result = self._run(ex, layer)
                    self._check(ex, result)
                    self._memo[key] = (layer, result)
                root, last = self._memo[key]
        return root, last

    @staticmethod
    def _check(ex: Exec, result: dict) -> None:
        code = result["exit_code"]
        ok = {"SUCCESS": code == 0, "ANY": not 128 <= code <= 191,
              "FAILURE": code != 0 and not 128 <= code <= 191}[ex.expect]
        if not ok:
            what = "did not complete successfully" if code else f"succeeded but expect is {ex.expect}"
            raise GraphQLError(
                f'process "{" ".join(ex.args)}" {what}: exit code: {code}',
                extensions={"_type": "EXEC_ERROR", "cmd": list(ex.args), "exitCode": code,
                            "stdout": result["stdout"].strip(), "stderr": result["stderr"].strip()})

    def _run(self, ex: Exec, layer: Path) -> dict:
        if not self.bwrap:
            raise GraphQLError("withExec: the Dagger engine double needs bubblewrap (bwrap), which is not installed")
        for mpath, _ in ex.mounts:  # bwrap cannot create a mount point inside a read-only bind
            for cpath, hpath in self._image_binds(ex.image):
                if _under(mpath, cpath) and not os.path.isdir(Path(hpath, posixpath.relpath(mpath, cpath))):
                    raise GraphQLError(f"engine double: cannot mount at {mpath}: {cpath} is read-only "
                                       "(it is the host's own directory, standing in for the image)")
        env = {"PATH": DEFAULT_PATH}
        if _is_python(ex.image):
            env["LANG"] = "C.UTF-8"
        with self._lock:
            secret_values = [self._secret_values[v] for _, kind, v in ex.env if kind == "secret"]
        for name, kind, value in ex.env:
            env[name] = self._secret_values[value] if kind == "secret" else value
        record = {"argv": list(ex.args), "image": ex.image, "workdir": ex.workdir,
                  "env": sorted(n for n, _, _ in ex.env),
                  "secret_env": sorted(n for n, k, _ in ex.env if k == "secret"),
                  "mounts": [{"path": p, "type": "cache", "source": s.key, "read_only": False}
                             if isinstance(s, CacheVolume) else
                             {"path": p, "type": "directory", "source": s.host_path, "read_only": True}
                             for p, s in ex.mounts],
                  "exit_code": None}
        with self._lock:
            self._execs.append(record)

        cmd = ex.args[0]
        if "/" not in cmd:
            found = None
            for d in env["PATH"].split(":"):
                if d.startswith("/"):
                    host = self.host_path(ex, posixpath.join(d, cmd), root=layer)
                    if host.is_file() and os.access(host, os.X_OK):
                        found = host
                        break
            if found is None:
                return self._finish(record, 1, "", f'exec: "{cmd}": executable file not found in $PATH\n')
        elif not self.host_path(ex, _abs(ex.workdir, cmd), root=layer).exists():
            return self._finish(record, 1, "", f"fork/exec {_abs(ex.workdir, cmd)}: no such file or directory\n")

        args = [self.bwrap, "--bind", str(layer), "/"]
        for cpath, hpath in sorted(self._image_binds(ex.image), key=lambda b: len(b[0])):
            if os.path.islink(hpath):
                if not os.path.lexists(layer / cpath.lstrip("/")):
                    os.symlink(os.readlink(hpath), layer / cpath.lstrip("/"))
            else:
                args += ["--ro-bind", hpath, cpath]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for mpath, src in sorted(ex.mounts, key=lambda m: len(m[0])):
            if isinstance(src, CacheVolume):
                args += ["--bind", str(self.cache_dir(src.key)), mpath]
            else:
                args += ["--ro-bind", str(self.state_dir / "snapshots" / src.digest), mpath]
        if not any(_under(ex.workdir, p) for p, _ in ex.mounts):
            (layer / ex.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        args += ["--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
        for name, value in env.items():
            args += ["--setenv", name, value]
        args += ["--chdir", ex.workdir, "--", *ex.args]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self._lock:
            self._procs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        err_text = err.decode("utf-8", "replace")
        if proc.returncode == 1 and err_text.startswith("bwrap: "):  # the sandbox itself failed
            raise GraphQLError(f"engine double: could not set up the container: {err_text.strip()}")
        return self._finish(record, proc.returncode, _scrub(out.decode("utf-8", "replace"), secret_values),
                            _scrub(err_text, secret_values))

    def _finish(self, record: dict, code: int, out: str, err: str) -> dict:
        record["exit_code"] = code
        return {"exit_code": code, "stdout": out, "stderr": err}

    # ---- HTTP ---------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("authorization", "")
        if auth[:6].lower() != "basic ":
            return False
        try:
            user = base64.b64decode(auth[6:].strip()).decode().partition(":")[0]
        except ValueError:
            return False
        return secrets.compare_digest(user, self.token)

    async def _query(self, request: web.Request) -> web.StreamResponse:
        entry: dict = {"query": None, "status": None, "errors": None}
        with self._lock:
            self._log.append(entry)
            fault = self._faults.popleft() if self._faults else None
        headers = {"x-dagger-engine": ENGINE_VERSION}
        try:
            body = json.loads(await request.read())
            query = body["query"]
            entry["query"] = mask_document(query)
        except (ValueError, KeyError, TypeError):
            body = None
        if fault == "drop":
            entry["status"] = "drop"
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written: the connection is gone
        if fault == "timeout":
            entry["status"] = "timeout"
            try:
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
            except asyncio.TimeoutError:
                pass
            if request.transport is not None:
                request.transport.abort()
            return web.Response()
        if not self._authorized(request):
            entry["status"] = 401
            return web.Response(status=401, headers={
                **headers, "WWW-Authenticate": 'Basic realm="Access to the Dagger engine session"'})
        if fault is not None:
            entry["status"] = fault
            return web.Response(status=fault, headers=headers)
        if body is None:
            entry["status"] = 400
            return web.json_response({"errors": [{"message": "invalid request body"}]}, status=400, headers=headers)
        result = await asyncio.to_thread(graphql_sync, self._schema, query, Query(), self,
                                         body.get("variables"), body.get("operationName"))
        payload = result.formatted
        entry["status"] = 200
        entry["errors"] = [e["message"] for e in payload.get("errors") or []] or None
        return web.json_response(payload, headers=headers)

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _ctl_execs(self, request: web.Request) -> web.Response:
        return web.json_response(self.execs)

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _ctl_fail_next(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            self.fail_next(int(body.get("n", 1)), body.get("kind", "drop"))
        except (ValueError, TypeError, AttributeError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        return web.json_response({"ok": True})

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/query", self._query)
        app.router.add_get("/_fake/requests", self._ctl_requests)
        app.router.add_get("/_fake/execs", self._ctl_execs)
        app.router.add_post("/_fake/fail_next", self._ctl_fail_next)
        app.router.add_post("/_fake/reset", self._ctl_reset)
        return app

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def serve(self, on_ready=None) -> None:
        """Listen, call ``on_ready``, serve until ``_stopping`` is set, then clean up."""
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False, shutdown_timeout=0.25)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, reuse_address=True).start()
            self.port = runner.addresses[0][1]
            if on_ready:
                on_ready()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def start(self) -> "DaggerEngineFake":
        if self._thread is not None:
            raise RuntimeError("the Dagger engine double is already started")
        ready, errors = threading.Event(), []
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(ready.set))
            except BaseException as e:  # reported by start()
                errors.append(e)
            finally:
                tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in tasks:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.close()
                ready.set()

        self._thread = threading.Thread(target=run, name="dagger-engine-double", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            self.stop()
            raise RuntimeError("the Dagger engine double failed to start") from (errors[0] if errors else None)
        return self

    def _kill_execs(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            proc.kill()

    def stop(self) -> None:
        """Kill running commands, stop serving, remove the state dir if it is ours."""
        self._kill_execs()
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None:
            if not loop.is_closed() and self._stopping is not None:
                try:
                    loop.call_soon_threadsafe(self._stopping.set)
                except RuntimeError:  # closed meanwhile
                    pass
            thread.join(5)
            self._thread = None
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> "DaggerEngineFake":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.dagger_engine", description="Dagger engine double")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=None)
    p.add_argument("--pull-fail", action="append", default=[], metavar="IMAGE")
    p.add_argument("--state-dir", default=None)
    a = p.parse_args(argv)
    engine = DaggerEngineFake(host=a.host, port=a.port, token=a.token, pull_fail=set(a.pull_fail),
                              state_dir=a.state_dir)

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def ready() -> None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, engine._stopping.set)
            print(f"READY {engine.url} {engine.token}", flush=True)

        await engine.serve(ready)

    try:
        asyncio.run(run())
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
