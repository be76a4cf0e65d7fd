"""Check the Prefect server before `prefect deploy`: reachable, credentials accepted,
work pool `orchestra` present (created as a process pool with --create-pool).

    python deployments/preflight.py --create-pool && prefect --no-prompt deploy --all

`prefect deploy` itself answers an unreachable server with a traceback and exit
code 1, and a missing work pool with a warning; this says what is wrong in one
line that names the URL or the pool, and exits 2. It never prints PREFECT_API_KEY.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

POOL = "orchestra"


class Problem(Exception):
    pass


def _settings() -> tuple[str, dict[str, str]]:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.api.url
    if not url:
        raise Problem("PREFECT_API_URL is not set: point it at the Prefect server to deploy to "
                      "(e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    headers = {}
    key = settings.api.key.get_secret_value() if settings.api.key else None
    auth = settings.api.auth_string.get_secret_value() if settings.api.auth_string else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    elif auth:
        import base64

        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return url.rstrip("/"), headers


def check(pool: str, create_pool: bool, timeout: float) -> str:
    from core.redact import redact_url

    api, headers = _settings()
    url = redact_url(api)  # as shown in messages: a password in the URL is masked
    with httpx.Client(base_url=api, headers=headers, timeout=timeout) as http:
        try:
            health = http.get("/health")
        except httpx.HTTPError as exc:
            raise Problem(f"the Prefect server at {url} is not reachable (PREFECT_API_URL): "
                          f"{type(exc).__name__}") from None
        if health.status_code in (401, 403):
            raise Problem(f"the Prefect server at {url} refused the credentials "
                          "(PREFECT_API_KEY / PREFECT_API_AUTH_STRING)")
        if health.status_code >= 400:
            raise Problem(f"the Prefect server at {url} answered /health with HTTP {health.status_code}; "
                          "is PREFECT_API_URL the API address (ending in /api)?")
        found = http.get(f"/work_pools/{pool}")
        if found.status_code == 404:
            if not create_pool:
                raise Problem(f"work pool '{pool}' does not exist on {url}; create it with "
                              f"`prefect work-pool create {pool} --type process` or run this with --create-pool")
            from prefect.workers.process import ProcessWorker

            made = http.post("/work_pools/", json={  # as `prefect work-pool create POOL --type process`
                "name": pool, "type": "process", "description": "Orchestra workflow runs",
                "base_job_template": ProcessWorker.get_default_base_job_template()})
            if made.status_code >= 400:
                raise Problem(f"could not create work pool '{pool}' on {url}: HTTP {made.status_code}")
            return f"created work pool '{pool}' (process) on {url}"
        if found.status_code >= 400:
            raise Problem(f"could not read work pool '{pool}' from {url}: HTTP {found.status_code}")
        kind = found.json().get("type")
        return f"Prefect server {url} is up; work pool '{pool}' ({kind}) exists"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python deployments/preflight.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", default=POOL, help=f"work pool the deployments use (default: {POOL})")
    p.add_argument("--create-pool", action="store_true", help="create the work pool (type process) if it is missing")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server")
    args = p.parse_args(argv)
    try:
        print(check(args.pool, args.create_pool, args.timeout))
        return 0
    except Problem as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
