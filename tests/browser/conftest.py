"""Headless chromium for the pages users open: the MLflow UI, Data Docs, DVC plots.

A person's `make test` skips these tests, saying how to get what is missing, where chromium,
chromedriver or selenium is not installed (`make browser-deps` installs the Debian packages).
Under CI (`CI=true`, set by `.ci/run`, which installs them) a missing piece fails the test
instead: CI exists to run them. The browser runs with the network off: every host name except
127.0.0.1 fails to resolve, so a page that still needs a CDN shows it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import free_port, require, wait_ready

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# No DNS except loopback: pages must not need the internet.
OFFLINE_RULES = "MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"
PAGE_TIMEOUT_S = 20


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables, or None when either is not installed."""
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, with the command that fixes it; None if they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (run `make setup`: it is in requirements.lock)"
    if chromium_paths() is None:
        return "chromium and chromedriver are not installed (run `make browser-deps`)"
    return None


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless, offline chromium driven by selenium; quit after the test."""
    require(skip_reason())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = chromium_paths()
    assert found is not None
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        f"--host-resolver-rules={OFFLINE_RULES}",
        "--allow-file-access-from-files",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(found[1]))
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def mlflow_ui(db: Path, artifacts: Path, timeout_s: float = 120) -> Iterator[str]:
    """`mlflow ui` on a free loopback port for the duration of the block; yields its URL.

    It answers in 20-40 s on 2 idle cores; the wait allows for a loaded CI machine."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--default-artifact-root",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # as `make ui` runs it: one process, without MLflow's job runner
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, "/health", timeout=timeout_s, proc=proc, interval=0.5)
        except AssertionError as err:
            stderr = proc.stderr.read()[-2000:] if proc.poll() is not None else ""
            raise RuntimeError(f"mlflow ui on {url}: {err} {stderr}") from err
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(driver: object, condition: str, timeout_s: float = PAGE_TIMEOUT_S) -> object:
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = driver.execute_script(f"return {condition}")  # type: ignore[attr-defined]
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"page never satisfied: {condition}")
        time.sleep(0.25)
