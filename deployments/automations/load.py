"""Create (or replace) Orchestra's Prefect automations on a Prefect server.

    python deployments/automations/load.py --block slack-webhook/orchestra-alerts
    python deployments/automations/load.py --block custom-webhook/ops --threshold 2.5
    python deployments/automations/load.py --print --threshold 1     # the JSON, no server needed

It reads `cost-alert.yaml` (or the file given), points its `send-notification`
actions at the notification block `--block TYPE/NAME`, rewrites the cost
threshold with `--threshold USD`, deletes automations of the same name, and
creates it through the Prefect API at PREFECT_API_URL. Plain
`prefect automation create --from-file FILE` loads the same file once its
`block_document_id` holds a real block id; this script only adds the look-ups.

Exit codes: 0 created, 2 a problem you can fix (no PREFECT_API_URL, server not
reachable, no such block, not a notification block, bad file), each with one
message that names it. No secret is ever printed: block fields are not read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_FILE = HERE / "cost-alert.yaml"
COST_LABEL = "orchestra.cost-usd"
INTEGER_DIGITS = 6
DECIMALS = 6
PLACEHOLDER_BLOCK = "00000000-0000-0000-0000-000000000000"


class Problem(Exception):
    """Something the user can fix; the message names it. Exit code 2."""


# ---------------------------------------------------------------------------
# the cost label and its threshold patterns


def cost_label(cost_usd: float) -> str:
    """The `orchestra.cost-usd` resource label of an event: fixed width, so that
    string order is numeric order (`0.0042` -> `"000000.004200"`)."""
    return f"{max(0.0, float(cost_usd)):0{INTEGER_DIGITS + 1 + DECIMALS}.{DECIMALS}f}"


def cost_patterns(threshold: float) -> list[str]:
    """Prefect label patterns that match exactly the labels of costs >= threshold.

    A label is >= the threshold's label T when it starts with T's significant
    prefix, or when at some position it has a larger digit after the same
    prefix. Larger digits inside T's run of leading zeros collapse into one
    negation: "does not start with that many zeros".
    """
    if not (threshold >= 0) or threshold >= 10**INTEGER_DIGITS:
        raise Problem(f"--threshold must be between 0 and {10**INTEGER_DIGITS} US dollars (got {threshold})")
    text = cost_label(threshold)
    significant = text.rstrip("0")                       # "000002.500000" -> "000002.5"
    if not significant.strip("0."):
        return ["*"]                                     # a zero threshold: every run
    zeros = min(len(text) - len(text.lstrip("0")), INTEGER_DIGITS)
    patterns = [f"!{'0' * zeros}*"] if zeros else []     # a larger digit within the leading zeros
    for i in range(zeros, len(significant)):
        if significant[i].isdigit():
            patterns += [f"{significant[:i]}{d}*" for d in range(int(significant[i]) + 1, 10)]
    patterns.append(f"{significant}*")                   # the same prefix, any digits after it
    return patterns[:1] + sorted(patterns[1:]) if zeros else sorted(patterns)


def _money(amount: float) -> str:
    return f"{amount:.2f}" if amount >= 0.01 and round(amount, 2) == amount else f"{amount:g}"


# ---------------------------------------------------------------------------
# the file


def read_automations(path: Path) -> list[dict[str, Any]]:
    import yaml

    if not path.is_file():
        raise Problem(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (yaml.YAMLError, ValueError) as exc:
        raise Problem(f"{path}: not valid YAML/JSON: {exc}") from None
    if isinstance(data, dict) and "automations" in data:
        data = data["automations"]
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) and i.get("name") for i in items):
        raise Problem(f"{path}: expected an automation (a mapping with a name) or a list of them")
    return items


def current_threshold(automation: dict[str, Any]) -> float | None:
    """The threshold the file's description states ("... $0.50 or more")."""
    m = re.search(r"\$(\d+(?:\.\d+)?) or more", str(automation.get("description", "")))
    return float(m.group(1)) if m else None


def apply_threshold(automation: dict[str, Any], threshold: float) -> dict[str, Any]:
    match = (automation.get("trigger") or {}).get("match")
    if not isinstance(match, dict) or COST_LABEL not in match:
        raise Problem(f"automation '{automation['name']}': its trigger does not match on the {COST_LABEL} label")
    old = current_threshold(automation)
    out = json.loads(json.dumps(automation))
    out["trigger"]["match"][COST_LABEL] = cost_patterns(threshold)
    if old is not None:
        before, after = f"${_money(old)}", f"${_money(threshold)}"
        out["description"] = out["description"].replace(before, after)
        for action in out.get("actions", []):
            for key in ("subject", "body"):
                if isinstance(action.get(key), str):
                    action[key] = action[key].replace(before, after)
    return out


def apply_block(automation: dict[str, Any], block_id: str) -> dict[str, Any]:
    out = json.loads(json.dumps(automation))
    for action in out.get("actions", []):
        if action.get("type") in ("send-notification", "call-webhook"):
            action["block_document_id"] = block_id
    return out


def needs_block(automation: dict[str, Any]) -> bool:
    return any(a.get("type") in ("send-notification", "call-webhook")
               and str(a.get("block_document_id", PLACEHOLDER_BLOCK)) == PLACEHOLDER_BLOCK
               for a in automation.get("actions", []))


def validate(automation: dict[str, Any]):
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    try:
        return AutomationCore.model_validate(automation)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Problem(f"automation '{automation.get('name')}': {where}: {first['msg']}") from None


# ---------------------------------------------------------------------------
# the server


def api_url() -> str:
    from prefect.settings import get_current_settings

    from core.redact import redact_url

    url = get_current_settings().api.url
    if not url:
        raise Problem("PREFECT_API_URL is not set: point it at the Prefect server that should hold the automation "
                      "(e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    return redact_url(url)  # for messages: a password in the URL is masked


async def _check_server(client, url: str) -> None:
    import httpx

    try:
        response = await client._client.get("/health")
    except (httpx.HTTPError, OSError):
        raise Problem(f"the Prefect server at {url} is not reachable (PREFECT_API_URL)") from None
    if response.status_code in (401, 403):
        raise Problem(f"the Prefect server at {url} refused the credentials (PREFECT_API_KEY / PREFECT_API_AUTH_STRING)")
    if response.status_code >= 400:
        raise Problem(f"the Prefect server at {url} answered /health with HTTP {response.status_code}")


async def _block_id(client, ref: str, url: str) -> str:
    from prefect.exceptions import ObjectNotFound

    slug, _, name = ref.partition("/")
    if not slug or not name:
        raise Problem(f"--block {ref!r}: write it as TYPE/NAME, e.g. slack-webhook/orchestra-alerts (see `prefect block ls`)")
    try:
        doc = await client.read_block_document_by_name(name=name, block_type_slug=slug, include_secrets=False)
    except ObjectNotFound:
        raise Problem(f"no block '{slug}/{name}' on the Prefect server at {url}; create a notification block "
                      f"with that type and name first (see `prefect block ls`)") from None
    capabilities = set(doc.block_schema.capabilities) if doc.block_schema else set()
    if "notify" not in capabilities:
        raise Problem(f"block '{slug}/{name}' is not a notification block (it cannot `notify`); "
                      "use e.g. slack-webhook, ms-teams-webhook or custom-webhook")
    return str(doc.id)


async def load(automations: list[dict[str, Any]], block: str | None) -> list[tuple[str, str]]:
    from prefect.client.orchestration import get_client

    url = api_url()
    created = []
    async with get_client() as client:
        await _check_server(client, url)
        block_id = await _block_id(client, block, url) if block else None
        ready = []
        for automation in automations:
            if block_id:
                automation = apply_block(automation, block_id)
            elif needs_block(automation):
                raise Problem(f"automation '{automation['name']}' sends a notification: name the notification "
                              "block with --block TYPE/NAME (e.g. --block slack-webhook/orchestra-alerts)")
            ready.append(validate(automation))
        for automation in ready:
            for old in await client.read_automations_by_name(automation.name):
                await client.delete_automation(old.id)
            created.append((automation.name, str(await client.create_automation(automation))))
    return created


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python deployments/automations/load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default=str(DEFAULT_FILE), help="automation file (YAML or JSON)")
    p.add_argument("--block", metavar="TYPE/NAME", help="notification block to send with, e.g. slack-webhook/orchestra-alerts")
    p.add_argument("--threshold", type=float, metavar="USD", help="alert when a run costs this much or more")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the automation JSON; create nothing")
    args = p.parse_args(argv)
    try:
        automations = read_automations(Path(args.file))
        if args.threshold is not None:
            automations = [apply_threshold(a, args.threshold) for a in automations]
        if args.print_only:
            for a in automations:
                validate(a if not needs_block(a) else apply_block(a, PLACEHOLDER_BLOCK))
            print(json.dumps(automations if len(automations) > 1 else automations[0], indent=2))
            return 0
        for name, automation_id in asyncio.run(load(automations, args.block)):
            print(f"created automation '{name}' ({automation_id})")
        return 0
    except Problem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.exit(main())
