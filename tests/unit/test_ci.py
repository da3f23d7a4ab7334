"""CI runs everything: `.ci/run` installs the browser, lints, then runs every test through
`make test`, while a person's `make test` stays the fast suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
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


def test_make_test_is_the_fast_suite_and_ci_arguments_select_all() -> None:
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "pytest"
    ]["ini_options"]["addopts"]
    assert "-m 'not slow'" in addopts  # `make test`: slow tests deselected
    # Under CI this runs inside `make test PYTEST_ARGS=...`: a nested make would inherit that
    # variable through MAKEFLAGS and the environment and print "Leaving directory" lines. Run
    # it as a person would.
    # Make also exports command-line variables to the recipe's environment, so PYTEST_ARGS
    # itself must go too.
    inherited = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "test", 'PYTEST_ARGS=-m "" --durations=25'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    # the later -m wins over addopts': every test, slow and browser ones included
    assert dry.stdout.splitlines()[-1].endswith('python -m pytest -m "" --durations=25')
    plain = subprocess.run(
        ["make", "--no-print-directory", "-n", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert plain.stdout.splitlines()[-1].rstrip().endswith("python -m pytest")
