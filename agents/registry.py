"""The file registry: one agent per YAML file, ``agents/*.yaml`` by default.

The agent's name is its ``name:`` field, else the file stem. A broken file is a
ValueError naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from .base import AgentConfig

AGENTS_DIR = Path(__file__).resolve().parent
_SUFFIXES = (".yaml", ".yml")

PathLike = str | Path


def _files(paths: PathLike | Iterable[PathLike] | None) -> list[Path]:
    if paths is None:
        paths = [AGENTS_DIR]
    elif isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file())
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
