"""Workflow definitions: parsing, validation messages, the /run-graph format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.spec import WorkflowError, coerce_inputs, load_workflow, parse_workflow

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "deployments" / "workflows").glob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_workflows_validate(path):
    wf = load_workflow(path)
    assert wf.name == path.stem
    assert wf.steps


def test_shipped_examples_cover_each_kind():
    names = {p.stem for p in SHIPPED}
    assert {"hello", "code-review", "research", "fan-out"} <= names


def test_types_define_dependencies():
    seq = parse_workflow({"name": "s", "type": "sequential", "steps": [
        {"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"id": "c", "prompt": "z"}]})
    assert seq.dependencies() == {"a": [], "b": ["a"], "c": ["b"]}
    par = parse_workflow({"name": "p", "type": "parallel", "steps": [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}]})
    assert par.dependencies() == {"a": [], "b": []}


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "name: x\nsteps:\n  - id: a\n    prompt: [unclosed\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    message = str(info.value)
    assert str(path) in message and "invalid YAML" in message and "line" in message


def test_malformed_json_names_line(tmp_path):
    path = write(tmp_path, "bad.json", '{"name": "x", "steps": [}')
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert "bad.json" in str(info.value) and "line 1" in str(info.value)


def test_cycle_names_the_steps():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "c", "steps": [
            {"id": "a", "prompt": "x", "depends_on": ["c"]},
            {"id": "b", "prompt": "x", "depends_on": ["a"]},
            {"id": "c", "prompt": "x", "depends_on": ["b"]},
            {"id": "d", "prompt": "x"}]}, source="c.yaml")
    message = str(info.value)
    assert "cycle" in message
    for sid in ("a", "b", "c"):
        assert f"{sid}" in message.split("cycle", 1)[1]
    assert "d" not in message.split("cycle", 1)[1].replace("-", "")


def test_every_problem_is_reported_with_its_step():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "m", "inputs": {"code": {"type": "string"}}, "steps": [
            {"id": "a", "prompt": "{{ inputs.nope }}"},
            {"id": "b", "prompt": "{{ steps.zzz.output }}", "agent": "no-such-agent"},
            {"id": "c", "prompt": "x", "depends_on": ["ghost"]}]}, source="m.yaml")
    problems = info.value.problems
    # depends_on errors are reported first, alone (the graph is unusable until fixed)
    assert problems == ["step 'c': depends_on names unknown step 'ghost'"]
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "m", "inputs": {"code": {"type": "string"}}, "steps": [
            {"id": "a", "prompt": "{{ inputs.nope }}"},
            {"id": "b", "prompt": "{{ steps.zzz.output }} {{ steps.a.text }}", "agent": "no-such-agent", "depends_on": ["a"]}]},
            source="m.yaml")
    text = "\n".join(info.value.problems)
    assert "step 'a': prompt: unknown input 'nope'" in text
    assert "step 'b': prompt: unknown step 'zzz'" in text
    assert "step 'b': prompt: step 'a' has no field 'text'" in text
    assert "step 'b': unknown agent 'no-such-agent'" in text


def test_template_must_use_upstream_steps_only():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "u", "steps": [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "{{ steps.a.output }}"}]})
    assert "not upstream" in str(info.value) and "step 'b'" in str(info.value)


def test_bad_model_string_names_agent():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "b", "agents": {"r": {"model": "gpt-4"}}, "steps": [{"id": "a", "agent": "r", "prompt": "x"}]})
    assert "agent 'r'" in str(info.value)


def test_unknown_field_and_bad_name():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "Bad Name", "steps": [{"id": "a", "prompt": "x", "retires": 3}]})
    text = "\n".join(info.value.problems)
    assert "name" in text and "step 'a': retires: unknown field" in text


def test_template_syntax_error_is_located():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "t", "steps": [{"id": "a", "prompt": "{{ inputs.x "}]})
    assert "step 'a': prompt:" in str(info.value)


def test_for_each_and_when_names_are_checked():
    wf = parse_workflow({"name": "f", "inputs": {"xs": {"type": "array", "default": [1]}}, "steps": [
        {"id": "a", "for_each": "inputs.xs", "prompt": "{{ item }} {{ index }}"},
        {"id": "b", "when": "inputs.xs | length > 1", "depends_on": ["a"], "prompt": "{{ steps.a.output | join(',') }}"}]})
    assert _step(wf, "a").for_each == "inputs.xs"
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "f", "steps": [{"id": "a", "prompt": "{{ item }}"}]})
    assert "unknown name 'item'" in str(info.value)


def test_output_schema_must_be_a_schema():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"name": "o", "steps": [{"id": "a", "prompt": "x", "output_schema": {"type": "nonsense"}}]})
    assert "step 'a': output_schema" in str(info.value)


def test_inputs_are_typed_and_checked():
    wf = parse_workflow({"name": "i", "inputs": {
        "n": {"type": "integer", "default": 1}, "flag": {"type": "boolean", "default": False},
        "xs": {"type": "array", "default": []}, "who": {"type": "string"}}, "steps": [{"id": "a", "prompt": "x"}]})
    assert coerce_inputs(wf, {"n": "3", "flag": "true", "xs": "[1, 2]", "who": "me"}) == {
        "n": 3, "flag": True, "xs": [1, 2], "who": "me"}
    with pytest.raises(WorkflowError) as info:
        coerce_inputs(wf, {"n": "three", "bogus": "1"})
    text = "\n".join(info.value.problems)
    assert "unknown input 'bogus'" in text and "input 'n': expected integer" in text and "input 'who' is required" in text


def test_run_graph_format(tmp_path):
    doc = {"workflow_type": "graph", "tasks": [
        {"agent_id": "1", "agent_role": "backend", "input_data": {"task": "Design the {API}"}, "depends_on": []},
        {"agent_id": "2", "agent_role": "frontend", "input_data": {"task": "Build the UI"}, "depends_on": []},
        {"agent_id": "3", "agent_role": "qa", "input_data": {"task": "Test it", "env": "staging"}, "depends_on": ["1", "2"]}]}
    wf = load_workflow(write(tmp_path, "graph-job.json", json.dumps(doc)))
    assert wf.name == "graph-job"
    assert wf.dependencies() == {"1": [], "2": [], "3": ["1", "2"]}
    assert _step(wf, "3").agent == "qa"
    from flows import templates

    text = templates.render(_step(wf, "3").prompt, {"steps": {"1": {"output": "API!"}, "2": {"output": "UI!"}}, "inputs": {}})
    assert text.startswith("Test it") and "API!" in text and "UI!" in text and "staging" in text
    assert templates.render(_step(wf, "1").prompt, {"steps": {}, "inputs": {}}) == "Design the {API}"


def test_run_graph_sequential_passes_previous_output():
    wf = parse_workflow({"workflow_type": "sequential", "tasks": [
        {"agent_id": "a", "agent_role": "backend", "input_data": {"task": "one"}},
        {"agent_id": "b", "agent_role": "qa", "input_data": {"task": "two"}}]})
    assert wf.dependencies() == {"a": [], "b": ["a"]}
    assert "steps['a'].output" in _step(wf, "b").prompt


def test_run_graph_unknown_role_is_an_error():
    with pytest.raises(WorkflowError) as info:
        parse_workflow({"workflow_type": "graph", "tasks": [
            {"agent_id": "1", "agent_role": "wizard", "input_data": {"task": "x"}}]}, source="job.json")
    assert "task '1'" in str(info.value) and "unknown agent_role 'wizard'" in str(info.value)


def test_python_workflow(tmp_path):
    path = write(tmp_path, "py_flow.py", "workflow = {'name': 'py-flow', 'steps': [{'id': 'a', 'prompt': 'hi'}]}\n")
    assert load_workflow(path).name == "py-flow"
    broken = write(tmp_path, "broken.py", "raise RuntimeError('boom')\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow(broken)
    assert "broken.py" in str(info.value) and "boom" in str(info.value)


def test_mermaid_graph():
    wf = load_workflow(ROOT / "deployments" / "workflows" / "code-review.yaml")
    text = wf.mermaid()
    assert text.startswith("flowchart TD")
    assert "s_security --> s_summary" in text and "s_style --> s_summary" in text


def _step(wf, step_id):
    return next(s for s in wf.steps if s.id == step_id)


def test_a_schema_error_does_not_hide_the_other_problems():
    """An unknown field used to stop validation at the schema; the cross-checks run too."""
    with pytest.raises(WorkflowError) as e:
        parse_workflow({"name": "w", "colour": "blue", "steps": [
            {"id": "a", "prompt": "{{ inputs.nope }}", "retries": "many"},
            {"id": "b", "prompt": "x", "depends_on": ["ghost"]}]})
    problems = e.value.problems
    assert "colour: unknown field" in problems
    assert any(p.startswith("step 'a': retries:") for p in problems), problems
    assert "step 'b': depends_on names unknown step 'ghost'" in problems
    with pytest.raises(WorkflowError) as e:
        parse_workflow({"name": "w", "steps": [{"id": "a", "prompt": "{{ inputs.nope }}", "colour": 1}]})
    assert e.value.problems == ["step 'a': colour: unknown field", "step 'a': prompt: unknown input 'nope'"]


def tooly(servers=("fake",), mcp_servers=None, **agent) -> dict:
    """A workflow whose one agent uses MCP servers."""
    wf = {"name": "w", "agents": {"tooly": {"model": "openai:gpt-4.1-mini", "servers": list(servers), **agent}},
          "steps": [{"id": "a", "agent": "tooly", "prompt": "x"}]}
    if mcp_servers is not None:
        wf["mcp_servers"] = mcp_servers
    return wf


FAKE = {"fake": {"command": "python", "args": ["-m", "tests.fakes.mcp_server"]}}


def test_an_agent_names_servers_of_the_workflow_or_the_shared_file(tmp_path, monkeypatch):
    from agents import mcp

    wf = parse_workflow(tooly(mcp_servers={**FAKE, "remote": {"url": "http://127.0.0.1:9/mcp"}},
                              servers=["fake", "remote"], tools=["fake.add", "remote.search"], max_tool_calls=3))
    assert wf.mcp_servers["fake"].kind == "stdio" and wf.mcp_servers["remote"].kind == "http"
    assert wf.agents["tooly"].max_tool_calls == 3 and wf.agents["tooly"].tool_timeout == 60
    with pytest.raises(WorkflowError) as e:
        parse_workflow(tooly(servers=["fetch"], mcp_servers=FAKE))
    assert e.value.problems == ["agent 'tooly': servers: unknown MCP server 'fetch' (not in the workflow's "
                                "mcp_servers: nor in agents/mcp_servers.yaml; defined: fake)"]
    shared = tmp_path / "mcp_servers.yaml"
    shared.write_text("fetch:\n  command: uvx\n  args: [mcp-server-fetch]\n")
    monkeypatch.setattr(mcp, "SERVERS_FILE", shared)
    assert parse_workflow(tooly(servers=["fetch"])).agents["tooly"].servers == ["fetch"]
    shared.write_text("fetch:\n  command: uvx\n  url: http://x\n")
    with pytest.raises(WorkflowError) as e:
        parse_workflow(tooly(servers=["fetch"]))
    assert e.value.problems == [f"{shared}: server 'fetch': has both a command and a url: give one"]


def test_a_server_only_the_fast_agent_block_defines_is_checked_when_the_run_starts(monkeypatch):
    monkeypatch.setenv("ORCHESTRA_FAST_AGENT_BLOCK", "team-fast-agent")
    assert parse_workflow(tooly(servers=["from-block"])).agents["tooly"].servers == ["from-block"]


@pytest.mark.parametrize("servers, problem", [
    ({"x": {"command": "a", "url": "http://h/mcp"}}, "mcp_servers.x: has both a command and a url: give one"),
    ({"x": {}}, "mcp_servers.x: give either a command (a stdio server) or a url (a streamable HTTP server)"),
    ({"x": {"transport": "sse", "command": "a"}}, "mcp_servers.x: an MCP server with transport 'sse' needs a url"),
    ({"x": {"command": "a", "headers": {"A": "b"}}}, "mcp_servers.x: url and headers are for http/sse servers, "
                                                    "not stdio ones"),
    ({"x": {"url": "ftp://h"}}, "mcp_servers.x: url must start with http:// or https://"),
    ({"x": {"command": "a", "colour": 1}}, "mcp_servers.x.colour: unknown field"),
    ({"bad name!": {"command": "a"}}, "mcp_servers: server 'bad name!': a name is 1-40 letters, digits, '_' or '-'"),
    ({"x": {"url": "http://h/mcp", "headers": {"Authorization": "Bearer {{ token }}"}}},
     "mcp_servers: server 'x': headers.Authorization: unknown name 'token' (only secret('NAME') is available here)"),
    ({"x": {"url": "http://h/mcp", "headers": {"A": "{{ secret(name) }}"}}},
     "mcp_servers: server 'x': headers.A: secret() takes one name in quotes, e.g. secret('SEARCH_TOKEN')"),
    ({"x": {"command": "a", "env": {"K": "{{ lookup('K') }}"}}},
     "mcp_servers: server 'x': env.K: only secret('NAME') may be called here"),
    ({"x": {"command": "a", "env": {"K": "{{ secret('K') "}}}, "mcp_servers: server 'x': env.K: syntax error"),
])
def test_bad_mcp_servers_are_named(servers, problem):
    with pytest.raises(WorkflowError) as e:
        parse_workflow({"name": "w", "mcp_servers": servers, "steps": [{"id": "a", "prompt": "x"}]})
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_secret_templates_are_accepted_and_rendered():
    from flows import templates

    wf = parse_workflow(tooly(mcp_servers={"s": {"url": "http://h/mcp", "headers": {
        "Authorization": "Bearer {{ secret('SEARCH_TOKEN') }}", "X-Both": "{{ secret('a-b') }}:{{ secret('C') }}"}}},
        servers=["s"]))
    headers = wf.mcp_servers["s"].headers
    assert templates.secret_names(headers["X-Both"]) == ("a-b", "C")
    assert templates.render_secrets(headers["Authorization"], {"SEARCH_TOKEN": "t0k"}) == "Bearer t0k"
    assert templates.secret_names("plain value") == ()


@pytest.mark.parametrize("agent, problem", [
    ({"tools": ["add"]}, "agent 'tooly': tools: 'add' is not server.tool (e.g. time.get_current_time)"),
    ({"tools": ["other.add"]}, "agent 'tooly': tools: 'other.add' names server 'other', which is not in the "
                               "agent's servers (fake)"),
    ({"max_tool_calls": 0}, "agent 'tooly': max_tool_calls: Input should be greater than or equal to 1"),
    ({"tool_timeout": 0}, "agent 'tooly': tool_timeout: Input should be greater than 0"),
    ({"servers": ["fake", "fake"]}, "agent 'tooly': servers: names a server more than once"),
])
def test_bad_tool_settings_of_an_agent_are_named(agent, problem):
    with pytest.raises(WorkflowError) as e:
        parse_workflow(tooly(mcp_servers=FAKE, **agent))
    assert problem in e.value.problems, e.value.problems


def test_a_step_has_exactly_one_kind():
    with pytest.raises(WorkflowError) as e:
        parse_workflow({"name": "w", "steps": [{"id": "a", "prompt": "x", "approval": {"message": "ok?"}},
                                               {"id": "b"}]})
    assert e.value.problems == [
        "step 'a': a step has exactly one of `prompt`, `approval`, `container` or `command` (this one has `prompt`, `approval`)",
        "step 'b': a step has exactly one of `prompt`, `approval`, `container` or `command` (this one has none)"]
    wf = parse_workflow({"name": "w", "steps": [{"id": "a", "prompt": "x"}, {"id": "b", "approval": {}}]})
    assert [s.kind for s in wf.steps] == ["agent", "approval"]


def test_run_graph_metadata_is_accepted_and_kept():
    body = {"workflow_type": "graph", "metadata": {"project": "acme", "ticket": 7},
            "tasks": [{"agent_id": "api", "agent_role": "backend", "input_data": {"task": "Design it."}}]}
    assert parse_workflow(body, default_name="x").metadata == {"project": "acme", "ticket": 7}
    with pytest.raises(WorkflowError) as e:
        parse_workflow({**body, "metadata": ["not", "an", "object"]})
    assert e.value.problems == ["metadata: must be an object (got list)"]
