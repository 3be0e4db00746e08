"""Print requirements.lock: every distribution installed in this venv, as `name==version`.

`make lock` runs it after upgrading .venv to the newest releases that requirements.txt allows, so
the lock is what was installed and tested together. lorakit itself (editable), pip, setuptools and
wheel are left out (pip installs the first from the checkout and brings the others).

A local version label is dropped (`torch==2.13.0`, not `2.13.0+cpu`): a pin without one matches
any build of that version (PEP 440), so the same lock installs the CPU build from PyTorch's CPU
index (`make lab TORCH=cpu`) or a local wheel, and the package index's build elsewhere.
"""

import json
import platform
import subprocess
import sys

LEAVE_OUT = {"lorakit", "pip", "setuptools", "wheel"}


def installed() -> list[tuple[str, str]]:
    """(name, version) of every distribution pip sees in this interpreter, editable ones left out."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=json", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted((d["name"], d["version"]) for d in json.loads(out))


def lock_lines(dists) -> list[str]:
    return [
        f"{name}=={version.split('+')[0]}"
        for name, version in sorted(dists, key=lambda d: d[0].lower())
        if name.lower() not in LEAVE_OUT
    ]


if __name__ == "__main__":
    print(
        "# Exact versions that `make lab` and `make test` install (LOCK=0: requirements.txt's floors)."
    )
    print(
        "# Written by `make lock` from a venv upgraded to the newest releases requirements.txt allows;"
    )
    print(
        f"# made on {platform.system()} {platform.machine()}, CPython {platform.python_version()}. Do not edit by hand."
    )
    print("\n".join(lock_lines(installed())))
