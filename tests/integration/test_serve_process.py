"""The service as a real process: no torch, start-up failures, kill -9 and restart, keys CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, git_env
from tests.helpers import free_port, wait_ready

pytestmark = pytest.mark.integration


def emergent(*args: str, cwd: Path = ROOT, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emergent", *args],
        cwd=cwd,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


NO_TORCH = """
import sys
from pathlib import Path
from emergent.serving.app import create_app
from emergent.serving.slots import resolve_local
from emergent.serving.settings import Settings
root = Path(sys.argv[1])
settings = Settings(
    sources={"sentiment": lambda: resolve_local("sentiment", root)},
    keys_file=root / "keys.json", store_path=root / "r.db",
)
app = create_app(settings)
print("torch" in sys.modules)
"""


def test_building_the_app_never_imports_torch(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(tmp_path)],
        env={**git_env(), "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_keys_cli_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    keys = tmp_path / "secrets" / "keys.json"
    add = emergent(
        "keys",
        "add",
        "--scope",
        "predict",
        "--scope",
        "admin",
        f"serve.keys_file={keys}",
        f"hydra.run.dir={tmp_path / 'h'}",
    )
    assert add.returncode == 0, add.stderr[-2000:]
    key = add.stdout.strip().splitlines()[-1]
    assert key.startswith("em_") and len(key) > 40
    stored = json.loads(keys.read_text())["keys"]
    assert key not in keys.read_text() and stored[0]["scopes"] == ["predict", "admin"]
    listed = emergent("keys", "list", f"serve.keys_file={keys}", f"hydra.run.dir={tmp_path / 'h'}")
    assert stored[0]["id"] in listed.stdout and key not in listed.stdout + listed.stderr
    assert key not in "".join(p.read_text() for p in (tmp_path / "h").rglob("*.log"))
    revoke = emergent(
        "keys", "revoke", stored[0]["id"], f"serve.keys_file={keys}", f"hydra.run.dir={tmp_path}"
    )
    assert revoke.returncode == 0 and json.loads(keys.read_text())["keys"] == []


@pytest.mark.slow  # serves the session's exported smoke models
def test_refuses_public_host_without_keys_and_missing_or_corrupt_models(
    tmp_path: Path, exported: Path, smoke_pretrained: Path
) -> None:
    common = [f"serve.keys_file={tmp_path / 'none.json'}", f"hydra.run.dir={tmp_path / 'h'}"]
    public = emergent("serve", "serve.host=0.0.0.0", *common)
    assert public.returncode != 0 and "holds no API key" in public.stderr
    missing = emergent("serve", f"serve.export_root={tmp_path / 'nothing'}", *common)
    assert missing.returncode != 0 and "no model package" in missing.stderr
    assert "Traceback" not in missing.stderr
    broken = tmp_path / "export"
    shutil.copytree(smoke_pretrained / "models" / "export" / "sentiment", broken / "sentiment")
    (broken / "sentiment" / "model.int8.onnx").write_bytes(b"not an onnx model")
    corrupt = emergent(
        "serve",
        f"serve.export_root={broken}",
        f"serve.port={free_port()}",
        f"serve.store.path={tmp_path / 'r.db'}",
        *common,
    )
    assert corrupt.returncode != 0
    assert "cannot load the model package" in corrupt.stderr and "sentiment" in corrupt.stderr


@pytest.mark.slow  # serves the session's exported smoke models
def test_kill_9_under_load_then_restart(
    tmp_path: Path, exported: Path, smoke_pretrained: Path
) -> None:
    db = tmp_path / "requests.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        sys.executable,
        "-m",
        "emergent",
        "serve",
        f"serve.port={port}",
        f"serve.export_root={smoke_pretrained / 'models' / 'export'}",
        f"serve.store.path={db}",
        f"serve.keys_file={tmp_path / 'none.json'}",
        "serve.limits.rate_per_second=0",
        f"hydra.run.dir={tmp_path / 'h'}",
    ]

    def start(warmup: int) -> subprocess.Popen:
        return subprocess.Popen(
            [*args, f"serve.warmup_batches={warmup}"],
            cwd=ROOT,
            env=git_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    server = start(1)
    try:
        wait_ready(url, timeout=45, proc=server, interval=0.02)
        stop, sent = threading.Event(), []

        def load() -> None:
            with httpx.Client(base_url=url, timeout=5) as client:
                while not stop.is_set():
                    try:
                        r = client.post("/v1/sentiment/predict", json={"texts": ["so good"]})
                        sent.append(r.status_code)
                    except httpx.HTTPError:
                        return

        workers = [threading.Thread(target=load) for _ in range(3)]
        for w in workers:
            w.start()
        time.sleep(1.5)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
        assert sent.count(200) > 5
    finally:
        if server.poll() is None:
            server.kill()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    conn.close()
    assert stored > 0

    server = start(300)  # enough warm-up calls to observe the not-ready window
    try:
        wait_ready(url, "/healthz", timeout=45, proc=server, interval=0.02)
        readiness = wait_ready(url, timeout=45, proc=server, interval=0.02)
        assert readiness[0] == 503 and readiness[-1] == 200
        r = httpx.post(url + "/v1/sentiment/predict", json={"texts": ["fine"]}, timeout=5)
        assert r.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] >= stored
