"""The file registry: one agent per YAML file, ``agents/*.yaml`` by default
(``agents/mcp_servers.yaml``, the shared map of MCP servers, is not an agent).

The agent's name is its ``name:`` field, else the file stem. A broken file is a
ValueError naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from .base import AgentConfig
from .mcp import SERVERS_FILE

AGENTS_DIR = Path(__file__).resolve().parent
_SUFFIXES = (".yaml", ".yml")


def _is_agent_file(path: Path) -> bool:
    """A YAML file of a folder of agents; ``mcp_servers.yaml`` (the shared MCP map) is not one."""
    return path.suffix in _SUFFIXES and path.is_file() and path.stem != SERVERS_FILE.stem

PathLike = str | Path


def _files(paths: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if paths is None:
        paths = [AGENTS_DIR]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if _is_agent_file(p))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such agent file or folder")
    return files


def load_agent(path: PathLike) -> AgentConfig:
    """The agent defined in one YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ValueError(f"{path}: invalid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of agent fields (name, model, instruction, ...)")
    data.setdefault("name", path.stem)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'agent'}: {_message(err)}"
            for err in e.errors()
        )
        raise ValueError(f"{path}: {problems}") from None


def _message(err: dict) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown field (allowed: {', '.join(AgentConfig.model_fields)})"
    message = err["msg"]
    return message.removeprefix("Value error, ")


def load_registry(paths: PathLike | Iterable[PathLike] | None = None) -> dict[str, AgentConfig]:
    """Agents by name from YAML files or folders of them (default: the shipped ``agents/*.yaml``).

    Two files defining the same name are an error.
    """
    registry: dict[str, AgentConfig] = {}
    origin: dict[str, Path] = {}
    for path in _files(paths):
        agent = load_agent(path)
        if agent.name in registry:
            raise ValueError(f"{path}: agent {agent.name!r} is already defined in {origin[agent.name]}")
        registry[agent.name] = agent
        origin[agent.name] = path
    return registry


# ---- writing agent files (the dashboard's agent form) ----------------------------------


class AgentFileError(ValueError):
    """An agent that cannot be saved; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def agent_files(folder: PathLike | None = None) -> list[Path]:
    """The agent files of ``folder`` (default: the shipped ``agents/``), by name."""
    folder = Path(folder) if folder else AGENTS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _is_agent_file(p))


def agent_file(name: str, folder: PathLike | None = None) -> Path | None:
    """The file that defines agent ``name`` (its ``name:`` field, else its stem)."""

    def declared(path: Path) -> object:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            return None
        return data.get("name") if isinstance(data, dict) else None

    files = agent_files(folder)
    for path in files:
        if path.stem == name and declared(path) in (None, name):
            return path
    return next((p for p in files if declared(p) == name), None)


def _round_trip():
    from ruamel.yaml import YAML

    rt = YAML()  # round-trip: comments, key order, quoting and flow style survive
    rt.preserve_quotes = True
    rt.width = 100
    rt.indent(mapping=2, sequence=4, offset=2)
    return rt


def agent_text(agent: AgentConfig, folder: PathLike | None = None, *,
               overwrite: bool = False) -> tuple[Path, str | None, str]:
    """What saving ``agent`` would write: ``(file, its text now or None, the new text)``.

    An existing file is edited in place with a round-trip YAML library (ruamel.yaml):
    its comments, key order, quoting and flow style stay; only changed fields change,
    fields the agent no longer sets are removed (a field written out at its default
    value is kept). ``overwrite=False`` refuses an agent that exists. AgentFileError
    naming the field."""
    import io

    from ruamel.yaml.scalarstring import LiteralScalarString

    folder = Path(folder) if folder else AGENTS_DIR
    if not folder.is_dir():
        raise AgentFileError("folder", f"{folder} is not a folder")
    name = agent.name
    if name == SERVERS_FILE.stem:
        raise AgentFileError("name", f"'{name}' is taken: {SERVERS_FILE.name} holds the shared MCP servers")
    existing = agent_file(name, folder)
    if existing is not None and not overwrite:
        raise AgentFileError("name", f"an agent named {name!r} already exists ({existing.name}); edit it instead")
    target = existing or folder / f"{name}.yaml"
    if existing is None and any(p.stem == name for p in agent_files(folder)):
        raise AgentFileError("name", f"{name}.yaml already exists and defines another agent")
    data = agent.model_dump(exclude_defaults=True, exclude={"name"})
    if target.stem != name:
        data = {"name": name, **data}
    rt = _round_trip()
    old = existing.read_text(encoding="utf-8") if existing is not None else None
    doc = rt.load(old) if old and old.strip() else None
    if not isinstance(doc, dict):
        from ruamel.yaml.comments import CommentedMap

        doc = CommentedMap()
    for key in list(doc):
        if key in data:
            continue
        if key == "name" and doc[key] == name:
            continue
        if key in AgentConfig.model_fields and key != "name" and doc[key] == getattr(agent, key):
            continue  # written out at its default on purpose
        del doc[key]
    for key, value in data.items():
        if key in doc and doc[key] == value:
            continue
        if key in doc and isinstance(doc[key], list) and isinstance(value, list):
            del doc[key][:]  # the same sequence object: its flow or block style stays
            doc[key].extend(value)
            continue
        if isinstance(value, str) and "\n" in value:
            value = LiteralScalarString(value if value.endswith("\n") else value + "\n")
        doc[key] = value
    buffer = io.StringIO()
    if len(doc):
        rt.dump(doc, buffer)
    text = buffer.getvalue()
    reread = yaml.safe_load(text) or {}
    reread.setdefault("name", target.stem)
    AgentConfig.model_validate(reread)  # what is written must read back as the same agent
    return target, old, text


def write_agent_text(target: PathLike, text: str) -> Path:
    """Write an agent file atomically: a temporary file in the same folder, fsynced, then
    renamed over the target, so readers see the old file or the new one, never half of
    one. The text must define a valid agent (AgentFileError otherwise, nothing written)."""
    import os
    import tempfile

    target = Path(target)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AgentFileError("file", f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise AgentFileError("file", "expected a mapping of agent fields (name, model, instruction, ...)")
    data.setdefault("name", target.stem)
    try:
        AgentConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise AgentFileError(".".join(str(p) for p in err["loc"]) or "agent", _message(err)) from None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, (target.stat().st_mode & 0o777) if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save_agent(agent: AgentConfig, folder: PathLike | None = None, *, overwrite: bool = False) -> Path:
    """Write ``agent`` to ``<folder>/<name>.yaml`` (or the file that already defines it):
    :func:`agent_text` then :func:`write_agent_text`. AgentFileError naming the field;
    nothing is written then."""
    target, _, text = agent_text(agent, folder, overwrite=overwrite)
    return write_agent_text(target, text)
