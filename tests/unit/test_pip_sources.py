"""scripts/pip_sources.py: `make setup` hands pip's package sources to uv, which does not read
pip's configuration."""

from __future__ import annotations

from scripts.pip_sources import uv_args

LISTING = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/ignored/by/the/variable'
user.timeout='60'
"""


def test_every_source_is_handed_on_with_pips_precedence() -> None:
    assert uv_args(LISTING) == [
        "--index-strategy",
        "unsafe-best-match",
        "--extra-index-url",
        "file:///opt/pypi/simple",
        "--extra-index-url",
        "file:///opt/pypi-more/simple",
        "--find-links",
        "/opt/wheels",  # the PIP_FIND_LINKS variable wins over the global file, as in pip
        "--constraint",
        "/etc/xdg/pip/constraints.txt",
    ]


def test_a_machine_without_sources_gets_pips_choice_across_indexes_only() -> None:
    assert uv_args("") == ["--index-strategy", "unsafe-best-match"]
    assert uv_args("global.timeout='60'\n") == ["--index-strategy", "unsafe-best-match"]
