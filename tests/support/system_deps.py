"""Install the Debian packages the test suite needs, when this process may.

Run by `make test` before pytest. As root (CI) it installs what is missing with
apt-get; otherwise it only says which tests will be skipped and why. It never fails
the build by itself: the tests that need a missing piece skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# command -> Debian package
NEEDED = {
    "chromium": "chromium",
    "bwrap": "bubblewrap",
}
POSTGRES = "postgresql"


def _have_postgres() -> bool:
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def main() -> int:
    missing = [pkg for cmd, pkg in NEEDED.items() if shutil.which(cmd) is None]
    if not _have_postgres():
        missing.append(POSTGRES)
    if not missing:
        print("system-deps: postgresql, chromium and bubblewrap are present")
        return 0
    if os.geteuid() != 0:
        print(f"system-deps: not root, cannot install {', '.join(missing)}; tests that need them will be skipped")
        return 0
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"system-deps: installing {', '.join(missing)} with apt-get ...", flush=True)
    update = subprocess.run(["apt-get", "update", "-qq"], env=env)
    install = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    if update.returncode or install.returncode:
        print("system-deps: apt-get failed; tests that need these packages will be skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
