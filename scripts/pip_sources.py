"""Print pip's package sources as uv arguments, for `make setup`.

uv installs the lock several times faster than pip (parallel downloads and unpacking), but it
does not read pip's configuration. A machine whose pip is set up to find wheels on its own disk
(`find-links`), on extra indexes or under constraints (a CPU-only torch, say) must hand those
to uv, or uv would resolve other files than pip. The sources are read from `pip config list`
(files and PIP_* variables, the variables first, as pip ranks them) and printed as one
shell-quoted line; a machine without any prints only `--index-strategy unsafe-best-match`,
which makes uv choose across indexes as pip does.

Usage: `uv pip install $(python scripts/pip_sources.py) -r requirements.lock`
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

# pip option -> uv option; every one may hold several space-separated values.
OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}
# `pip config list` scopes, the one pip obeys first leading.
SCOPES = (":env:", "site", "user", "global")
LINE = re.compile(r"^(?P<scope>[^.]+)\.(?P<key>[^=]+)=(?P<value>.*)$")


def uv_args(listing: str) -> list[str]:
    """uv arguments for the sources in `listing` (`pip config list`'s output)."""
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        match = LINE.match(line.strip())
        if match and match["key"] in OPTIONS:
            found.setdefault(match["key"], {})[match["scope"]] = match["value"]
    args = ["--index-strategy", "unsafe-best-match"]
    for key, flag in OPTIONS.items():
        scoped = found.get(key, {})
        scope = next((s for s in SCOPES if s in scoped), None)
        if scope is None:
            continue
        for item in " ".join(shlex.split(scoped[scope])).split():  # pip quotes the value
            args += [flag, item]
    return args


def main() -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(shlex.join(uv_args(listing)))


if __name__ == "__main__":
    main()
