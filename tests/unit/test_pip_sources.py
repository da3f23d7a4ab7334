"""scripts/pip_sources.py: `make setup` hands pip's package sources to uv, which does not read
pip's configuration."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from scripts.pip_sources import uv_args

from tests.conftest import ROOT

NOTHING = {
    "no_index": False,
    "index_url": "https://pypi.org/simple",
    "extra_index_urls": [],
    "find_links": [],
    "constraints": [],
    "trusted_hosts": [],
    "cert": None,
}


def test_every_source_pip_would_use_is_handed_to_uv() -> None:
    options = SimpleNamespace(
        **{
            **NOTHING,
            "index_url": "https://mirror.example/simple/",
            "extra_index_urls": ["file:///opt/pypi/simple", "file:///opt/more/simple"],
            "find_links": ["/opt/wheels"],
            "constraints": ["/etc/xdg/pip/constraints.txt"],
            "trusted_hosts": ["mirror.example"],
            "cert": "/etc/ssl/certs/proxy.pem",
        }
    )
    assert uv_args(options) == [
        *("--index-strategy", "unsafe-best-match"),
        *("--index-url", "https://mirror.example/simple/"),
        *("--extra-index-url", "file:///opt/pypi/simple"),
        *("--extra-index-url", "file:///opt/more/simple"),
        *("--find-links", "/opt/wheels"),
        *("--constraints", "/etc/xdg/pip/constraints.txt"),
        *("--allow-insecure-host", "mirror.example"),
        *("--cert", "/etc/ssl/certs/proxy.pem"),
    ]


def test_a_machine_without_sources_gets_pips_choice_across_indexes_only() -> None:
    assert uv_args(SimpleNamespace(**NOTHING)) == ["--index-strategy", "unsafe-best-match"]
    offline = SimpleNamespace(**{**NOTHING, "no_index": True, "find_links": ["/w"]})
    assert uv_args(offline) == [
        *("--index-strategy", "unsafe-best-match", "--no-index", "--find-links", "/w")
    ]


def test_the_install_section_and_one_value_per_line_are_read_as_pip_reads_them(
    tmp_path: Path,
) -> None:
    """pip's documented way to list several find-links: one per line, in [install]."""
    config = tmp_path / "pip.conf"
    config.write_text("[install]\nfind-links =\n    /srv/wheels-a\n    /srv/wheels-b\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = str(config)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pip_sources.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    args = shlex.split(done.stdout)
    links = [args[i + 1] for i, a in enumerate(args) if a == "--find-links"]
    assert links[-2:] == ["/srv/wheels-a", "/srv/wheels-b"]
