"""CI runs everything: `.ci/run` installs the browser, lints, then runs every test through
`make test`, while a person's `make test` stays the fast suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, git_env

STUB = """#!/bin/sh
printf '%s|CI=%s\\n' "$*" "$CI" >> "$MAKE_CALLS"
"""


def test_ci_installs_the_browser_lints_and_runs_every_test(tmp_path: Path) -> None:
    """.ci/run, with `make` replaced by a stub that records its calls."""
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    shutil.copy2(ROOT / ".ci" / "run", project / ".ci" / "run")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=git_env())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(STUB, encoding="utf-8")
    (bin_dir / "make").chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {**git_env(), "MAKE_CALLS": str(calls)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.pop("CI", None)
    done = subprocess.run(
        ["bash", str(project / ".ci" / "run")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert calls.read_text(encoding="utf-8").splitlines() == [
        "browser-deps|CI=true",
        "server-deps|CI=true",
        "lint|CI=true",
        'test PYTEST_ARGS=-m "" --durations=25|CI=true',
    ]


PICK = """import pytest


def test_quick() -> None:
    pass


@pytest.mark.slow
def test_heavy() -> None:
    pass
"""


def test_make_test_is_the_fast_suite_and_ci_arguments_select_all(tmp_path: Path) -> None:
    """`make test` with the project's Makefile and pytest settings, on a scratch suite of one
    quick and one slow test: alone it runs the quick one only; with CI's arguments both."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, project / name)
    (project / "tests" / "test_pick.py").write_text(PICK, encoding="utf-8")
    # Under CI this runs inside `make test PYTEST_ARGS=...`: a nested make would inherit that
    # variable through MAKEFLAGS and the environment. Run it as a person would.
    inherited = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in inherited}

    def make_test(*args: str) -> str:
        """`make test` with this venv's Python and the (already done) set-up skipped."""
        bin_dir = f"BIN={Path(sys.executable).parent}"
        done = subprocess.run(
            ["make", "--no-print-directory", "-o", "setup", "test", bin_dir, *args],
            cwd=project,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    assert re.search(r"\b1 passed, 1 deselected\b", make_test())
    # the later -m wins over addopts': every test, slow and browser ones included
    assert re.search(r"\b2 passed\b", make_test('PYTEST_ARGS=-m "" --durations=25'))
