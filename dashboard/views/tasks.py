"""Tasks: projects with their progress, a project's task tree (status, assignee, progress),
one task's workflow, runs and history, and buttons to plan and execute it (members and
above: the task service, as `orchestra tasks plan|execute` calls it, as the logged-in user)."""

import streamlit as st

from dashboard import auth
from dashboard import tasks_data as td
from orchestra import access

STATUS = {"todo": "gray", "running": "blue", "done": "green", "failed": "red", "blocked": "orange",
          "cancelled": "gray"}


def badge(status: str) -> str:
    return f":{STATUS.get(status, 'gray')}-badge[{status}]"


st.title("Tasks")
for kind, text in st.session_state.pop("tasks_notice", []):
    (st.success if kind == "ok" else st.error)(text, icon=":material/check_circle:" if kind == "ok" else
                                               ":material/error:")

data = td.overview()
if not data["projects"] and not data["loose"]:
    st.info("No tasks yet: add one with `orchestra tasks add TITLE [--project P]` (and a project with "
            "`orchestra projects add NAME`).", icon=":material/task_alt:")
    st.stop()

st.subheader("Projects")
for p in data["projects"]:
    counts = ", ".join(f"{n} {s}" for s, n in p["statuses"].items()) or "no tasks"
    st.progress(min(max(p["progress"], 0.0), 1.0), text=f"**{p['name']}** · {p['progress']:.0%} · {counts}"
                + (f" — {p['description']}" if p["description"] else ""))

choices = [p["name"] for p in data["projects"]] + ([td.NO_PROJECT] if data["loose"] else [])
project = st.selectbox("Project", choices, key="tasks_project")
rows = td.tree_rows(None if project == td.NO_PROJECT else project)
if not rows:
    st.info(f"No tasks in {project} yet: `orchestra tasks add TITLE --project {project}`.",
            icon=":material/task_alt:")
    st.stop()

st.dataframe(rows, hide_index=True, width="stretch",
             column_order=["id", "task", "status", "assignee", "progress", "workflow", "after", "runs"],
             column_config={"id": st.column_config.NumberColumn("#"),
                            "task": st.column_config.TextColumn("Task", width="large"),
                            "status": st.column_config.TextColumn("Status"),
                            "assignee": st.column_config.TextColumn("Assignee"),
                            "progress": st.column_config.ProgressColumn("Progress", min_value=0.0, max_value=1.0,
                                                                        format="percent"),
                            "workflow": st.column_config.TextColumn("Workflow"),
                            "after": st.column_config.TextColumn("Runs after"),
                            "runs": st.column_config.NumberColumn("Runs")})

by_id = {r["id"]: r for r in rows}
task_id = st.selectbox("Task", list(by_id), key="tasks_task",
                       format_func=lambda i: f"#{i} · {by_id[i]['title']} · {by_id[i]['status']}")
detail = td.task_detail(task_id)
task = detail["task"]

st.divider()
head, plan_col, run_col = st.columns([4, 1, 1], vertical_alignment="center")
head.subheader(f"#{task['id']} {task['title']} {badge(task['status'])}")
running = task["status"] == "running"
who = auth.actor()
if access.allowed(who, "task.plan") and plan_col.button(
        "Plan", key="tasks_plan", icon=":material/account_tree:", width="stretch", disabled=running,
        help="Create the task's workflow (the planner, or the shipped task workflow)"):
    ok, text = td.plan(task["id"], who)
    st.session_state["tasks_notice"] = [("ok" if ok else "error", text)]
    st.rerun()
if access.allowed(who, "task.execute") and run_col.button(
        "Execute", key="tasks_execute", icon=":material/play_arrow:", width="stretch", type="primary",
        disabled=running or task["status"] == "blocked", help="Run its workflow in the background"):
    with st.spinner("Starting the run…"):
        ok, text = td.execute(task["id"], who)
    st.session_state["tasks_notice"] = [("ok" if ok else "error", text)]
    st.rerun()

st.progress(min(max(task["progress"], 0.0), 1.0), text=f"Progress {task['progress']:.0%}")
facts = [("Project", task["project"]), ("Parent", f"#{task['parent_id']}" if task["parent_id"] else None),
         ("Children", ", ".join(f"#{c}" for c in task["children"])),
         ("Runs after", ", ".join(f"#{d}" for d in task["depends_on"])), ("Assignee", task["assignee"]),
         ("Labels", ", ".join(task["labels"])), ("Workflow", detail["workflow"])]
st.markdown(" · ".join(f"**{k}:** {v}" for k, v in facts if v))
if task["description"]:
    st.caption(task["description"])
if detail["plan_errors"]:
    st.error("**The last plan failed:**\n" + "\n".join(f"- {e}" for e in detail["plan_errors"]),
             icon=":material/error:")

if detail["yaml"]:
    with st.expander("Workflow definition (what runs)", expanded=not task["runs"]):
        st.code(detail["yaml"], language="yaml")

st.markdown("##### Runs")
if detail["runs"]:
    st.dataframe(detail["runs"], hide_index=True, width="stretch",
                 column_config={"flow_run_id": st.column_config.TextColumn("Flow run"),
                                "progress": st.column_config.ProgressColumn("Progress", min_value=0.0,
                                                                            max_value=1.0, format="percent"),
                                "cost_usd": st.column_config.NumberColumn("Cost", format="$%.6f")})
else:
    st.caption("No run yet.")

st.markdown("##### History")
st.dataframe(detail["history"], hide_index=True, width="stretch",
             column_config={"why": st.column_config.TextColumn("Why", width="large")})
