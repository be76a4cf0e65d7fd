"""Every bad workflow in tests/data/bad/ through `orchestra validate` and `orchestra run --json`.

`expected.json` names, per file, the messages it must get, the CLI arguments it runs
with (`name=@N` stands for an N-character value) and whether the problem is one of the
run (inputs, options: `runtime`, the file itself validates). Each must: exit 2, say what
is wrong naming the file (and the step where there is one), print exactly one JSON
object on stdout with `--json`, print no traceback, send no provider request and
write nothing to the ledger. The commands run in this process (the CLI's own `main`),
so the ~80 cases take seconds; `test_a_bad_file_through_a_real_process` runs one as a
user would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
CASES = json.loads((BAD / "expected.json").read_text())


def _args(case: dict) -> list[str]:
    return [re.sub(r"=@(\d+)$", lambda m: "=" + "x" * int(m.group(1)), a) for a in case.get("args", [])]


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from orchestra.cli import main

    old = sys.argv
    sys.argv = ["orchestra", *argv]
    try:
        with pytest.raises(SystemExit) as done:
            main()
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def test_every_expectation_names_a_file_and_every_file_has_one():
    files = {p.name for p in BAD.iterdir() if p.name != "expected.json"}
    assert files == set(CASES)
    assert all(case["expect"] for case in CASES.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_workflow_is_refused_clearly(name, capsys, tmp_path, monkeypatch, openai_fake):
    case = CASES[name]
    path = str(BAD / name)
    ledger = tmp_path / "ledger.db"
    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{ledger}")
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    run_args = _args(case)
    model = [] if "--model" in run_args else ["--model", "openai:gpt-4.1-mini"]

    for argv in (["validate", path], ["run", path, *model, *run_args, "--json"]):
        if argv[0] == "validate" and case.get("runtime"):
            continue  # a run-time problem (inputs, options): the file itself is valid
        code, out, err = _cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert "Traceback" not in out + err
        for needle in case["expect"]:
            assert needle in err, (needle, err)
        if not any(a.startswith("--") for a in run_args) or argv[0] == "validate":
            assert path in err or name in err, err  # the file is named (not for a bad option)
        if argv[0] == "run":
            lines = out.splitlines()
            assert len(lines) == 1, out
            obj = json.loads(lines[0])
            assert set(obj) == {"error", "problems", "file"} and obj["problems"]
            assert all(any(n in p or n in obj["error"] for p in obj["problems"]) for n in case["expect"]), obj
    assert openai_fake.requests == []
    assert not ledger.exists() or _no_runs(ledger)


def _no_runs(path: Path) -> bool:
    import sqlite3

    with sqlite3.connect(path) as conn:
        try:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
        except sqlite3.OperationalError:  # never migrated: nothing written
            return True


def test_a_bad_file_through_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestra.cli", "run", str(BAD / "cycle.yaml"), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "ORCHESTRA_HOME": str(tmp_path), "HOME": str(tmp_path)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["problems"] == ["cycle between steps: a -> b -> a"]
