"""Alembic migrations of the Orchestra ledger (``ledger/alembic.ini``).

:func:`head_revisions` reads the revision ids straight from the files in
``versions/`` (a regex, no Alembic import), which lets ``Store.migrate()`` skip
Alembic entirely when the database is already at head.  A test checks that it
agrees with Alembic's own ``ScriptDirectory.get_heads()``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

__all__ = ["VERSION_TABLE", "MIGRATIONS_DIR", "ALEMBIC_INI", "head_revisions", "known_revisions"]

# Not Alembic's default "alembic_version": a team may point ORCHESTRA_DB_URL at the
# database of a Prefect server, which keeps its own revisions in "alembic_version".
VERSION_TABLE = "orchestra_alembic_version"

MIGRATIONS_DIR = Path(__file__).resolve().parent
ALEMBIC_INI = MIGRATIONS_DIR.parent / "alembic.ini"

_REVISION = re.compile(r"^revision\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\s*(?::[^=\n]*)?=\s*(.+)$", re.M)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


@lru_cache(maxsize=1)
def _graph() -> tuple[frozenset[str], frozenset[str]]:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        rev = _REVISION.search(text)
        if not rev:
            continue
        revisions.add(rev.group(1))
        down = _DOWN.search(text)
        if down:
            parents.update(_QUOTED.findall(down.group(1)))
    return frozenset(revisions), frozenset(parents)


def known_revisions() -> frozenset[str]:
    return _graph()[0]


def head_revisions() -> frozenset[str]:
    revisions, parents = _graph()
    return revisions - parents
