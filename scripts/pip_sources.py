"""Print pip's package sources as uv arguments, for `make setup`.

uv installs the lock several times faster than pip (parallel downloads and unpacking), but it
does not read pip's configuration. A machine whose pip is set up to find wheels on its own disk
(`find-links`), on extra indexes, offline (`no-index`) or under constraints (a CPU-only torch,
say) must hand those to uv, or uv would resolve other files than pip. The options are read by
pip's own parser for `pip install` (config files in pip's order, their [global] and [install]
sections, one-per-line values, PIP_* variables), so they are what `pip install` would use.
Printed as one shell-quoted line; a machine without any prints only `--index-strategy
unsafe-best-match`, which makes uv choose across indexes as pip does.

Usage (the quoting needs `eval`): `eval "uv pip install $(python scripts/pip_sources.py) ..."`
"""

from __future__ import annotations

import shlex
from typing import Any

PYPI = "https://pypi.org/simple"


def install_options() -> Any:
    """pip's options for `pip install` with no arguments: its configuration, parsed by pip."""
    from pip._internal.commands import create_command

    options, _ = create_command("install").parse_args([])
    return options


def uv_args(options: Any) -> list[str]:
    """uv arguments for pip's install `options` (as `install_options` returns them)."""
    args = ["--index-strategy", "unsafe-best-match"]
    if options.no_index:
        args.append("--no-index")
    elif options.index_url and options.index_url.rstrip("/") != PYPI:
        args += ["--index-url", options.index_url]
    for flag, values in (
        ("--extra-index-url", options.extra_index_urls),
        ("--find-links", options.find_links),
        ("--constraints", options.constraints),
        ("--allow-insecure-host", options.trusted_hosts),
    ):
        for value in values or ():
            args += [flag, value]
    if options.cert:  # a CA bundle pip trusts (a proxy's, say): uv trusts it too
        args += ["--cert", options.cert]
    return args


def main() -> None:
    print(shlex.join(uv_args(install_options())))


if __name__ == "__main__":
    main()
