"""The container: and command: formats at validation: every bad input located (file and
step), exit 2 from `orchestra validate`; the no-engine warning, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.spec import WorkflowError, load_workflow, parse_workflow

ROOT = Path(__file__).resolve().parents[2]
ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]
ENGINE_VARS = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN",
               "_EXPERIMENTAL_DAGGER_RUNNER_HOST", "ORCHESTRA_DAGGER_BLOCK")


def problems(*steps, **wf) -> list[str]:
    with pytest.raises(WorkflowError) as e:
        parse_workflow({"name": "w", "steps": list(steps), **wf}, source="w.yaml")
    assert str(e.value).startswith("w.yaml:")
    return e.value.problems


def container(**spec) -> dict:
    return {"id": "c", "container": {"image": "python:3.12-slim", "run": ["true"], **spec}}


@pytest.mark.parametrize("spec, expected", [
    ({"image": ""}, "step 'c': container.image: the image name is empty"),
    ({"image": "Python 3!"}, "step 'c': container.image: 'Python 3!' is not an image reference"),
    ({"image": "python::3"}, "is not an image reference"),
    ({"run": "python -m pytest"}, "step 'c': container.run: must be a list of strings (the argv"),
    ({"run": []}, "step 'c': container.run: List should have at least 1 item"),
    ({"script": "echo hi"}, "give exactly one of `run` (an argv list) and `script`"),
    ({"mounts": {"../secrets": "/src"}}, "mount '../secrets' leaves the repository ('..')"),
    ({"mounts": {"/etc": "/src"}}, "mount '/etc' is an absolute host path"),
    ({"mounts": {"~/.ssh": "/src"}}, "mount '~/.ssh' is an absolute host path"),
    ({"mounts": {".": "src"}}, "mount '.' -> 'src' must be an absolute path inside the container"),
    ({"mounts": {".": "/src/../etc"}}, "must not contain '..'"),
    ({"mounts": {".": "/"}}, "a mount cannot replace the container's root"),
    ({"outputs": ["/out/../../x"]}, "output '/out/../../x' must not contain '..'"),
    ({"outputs": ["report.xml"]}, "output 'report.xml' must be an absolute path inside the container"),
    ({"workdir": "src"}, "workdir 'src' must be an absolute path inside the container"),
    ({"env": {"1BAD": "x"}}, "env: variable '1BAD' is not a variable name"),
    ({"env": {"N": 1}}, "step 'c': container.env.N: Input should be a valid string"),
    ({"secrets": ["not-a-name"]}, "secret 'not-a-name' is not a variable name"),
    ({"secrets": ["TOKEN"], "env": {"TOKEN": "x"}}, "TOKEN: in both env and secrets"),
    ({"cache": {"pip cache": "/c"}}, "cache 'pip cache': a cache name is letters"),
    ({"privileged": True}, "step 'c': container.privileged: unknown field"),
])
def test_bad_container_fields_are_located(spec, expected):
    step = container(**spec)
    if "script" in spec and "run" not in spec:
        step["container"]["run"] = ["true"]  # both: refused
    found = problems(step)
    assert any(expected in p for p in found), found


def test_bad_command_fields_are_located():
    found = problems({"id": "lint", "command": {"run": "ruff check ."}},
                     {"id": "other", "command": {"run": ["true"], "workdir": "../x", "network": "maybe"}})
    assert any(p.startswith("step 'lint': command.run: must be a list of strings") for p in found), found
    assert any("step 'other': command.workdir" in p and "leaves the repository" in p for p in found), found
    assert any(p.startswith("step 'other': command.network:") for p in found), found


def test_a_step_has_one_kind_and_process_steps_take_no_agent():
    found = problems({"id": "both", "prompt": "x", "container": {"image": "alpine", "run": ["true"]}},
                     {"id": "agented", "agent": "reviewer", "command": {"run": ["true"]}},
                     {"id": "p", "prompt": "x", "allow_failure": True})
    assert "step 'both': a step has exactly one of `prompt`, `approval`, `container` or `command` " \
           "(this one has `prompt`, `container`)" in found
    assert "step 'agented': agent: not allowed on a command step (it runs a process, not an agent)" in found
    assert "step 'p': allow_failure: only container and command steps have an exit code" in found


def test_templates_read_exit_code_and_files_and_nothing_else():
    ok = parse_workflow({"name": "w", "steps": [
        container(), {"id": "lint", "command": {"run": ["true"]}},
        {"id": "next", "depends_on": ["c", "lint"],
         "prompt": "{{ steps.c.exit_code }} {{ steps.c.files }} {{ steps.lint.exit_code }} {{ steps.c.output }}"}]})
    assert [s.kind for s in ok.steps] == ["container", "command", "agent"]
    found = problems(container(), {"id": "lint", "command": {"run": ["true"]}},
                     {"id": "next", "depends_on": ["c", "lint"],
                      "prompt": "{{ steps.c.stdout }} {{ steps.lint.files }} {{ inputs.nope }}"},
                     {"id": "tpl", "container": {"image": "alpine", "run": ["echo", "{{ steps.c.output }}"]}})
    assert "step 'next': prompt: step 'c' has no field 'stdout' (only 'output', 'exit_code', 'files')" in found
    assert "step 'next': prompt: step 'lint' has no field 'files' (only 'output', 'exit_code')" in found
    assert "step 'next': prompt: unknown input 'nope'" in found
    assert ("step 'tpl': container.run[1]: uses step 'c', which is not upstream of it (add it to depends_on)"
            in found)


def test_paths_of_a_workflow_file_are_checked_against_its_git_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    (repo / "flows").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "src" / "link").symlink_to(outside)
    path = repo / "flows" / "ci.yaml"
    path.write_text("steps:\n"
                    "  - {id: ok, container: {image: alpine, run: [ls], mounts: {src: /src}}}\n"
                    "  - {id: gone, container: {image: alpine, run: [ls], mounts: {nothere: /src}}}\n"
                    "  - {id: escape, container: {image: alpine, run: [ls], mounts: {src/link: /src}}}\n"
                    "  - {id: lint, command: {run: [ls], workdir: src/link}}\n")
    with pytest.raises(WorkflowError) as e:
        load_workflow(path)
    assert e.value.source == str(path)
    found = e.value.problems
    assert len(found) == 3, found
    assert f"step 'gone': container.mounts: mount 'nothere' does not exist in the repository {repo}" in found
    assert any(p.startswith("step 'escape': container.mounts: mount 'src/link' leaves the repository") for p in found)
    assert any(p.startswith("step 'lint': command.workdir: workdir 'src/link' leaves the repository") for p in found)


@pytest.fixture
def no_engine_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_VARS and not k.startswith("PYTEST")}
    env.update(ORCHESTRA_HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")
    return env


def validate(path: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*ORCHESTRA, "validate", str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_validate_warns_without_an_engine_and_exits_0(no_engine_env):
    wf = ROOT / "deployments" / "workflows" / "ci-review.yaml"
    proc = validate(wf, no_engine_env)
    assert proc.returncode == 0, proc.stderr
    assert "ok — workflow 'ci-review', 3 steps" in proc.stdout
    warning = " ".join(proc.stderr.split())
    assert warning.startswith(f"warning: {wf}: step 'tests': a container step, and no Dagger engine is configured")
    assert "dagger run orchestra run" in warning and "Traceback" not in proc.stderr
    configured = validate(wf, {**no_engine_env, "DAGGER_SESSION_PORT": "8080", "DAGGER_SESSION_TOKEN": "t"})
    assert configured.returncode == 0 and "warning" not in configured.stderr
    assert parse_workflow({"name": "w", "steps": [{"id": "a", "prompt": "x"}]}).warnings == []


def test_validate_exits_2_naming_the_file_and_step(no_engine_env, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps:\n"
                    "  - {id: tests, prompt: hi, container: {image: '', run: pytest, mounts: {/etc: /src}}}\n")
    proc = validate(path, no_engine_env)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    for needle in (str(path), "step 'tests': container.image: the image name is empty",
                   "step 'tests': container.run: must be a list of strings",
                   "mount '/etc' is an absolute host path"):
        assert needle in text, text
