"""The loop's parts: the trigger decision, the lock, the reload against a real local service
(stub models), and an iteration with nothing to do (exit 10, its report written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emergent.config import Paths
from emergent.errors import NothingToDo, StageError
from emergent.loop import experiment, lock, service
from emergent.loop.trigger import Trigger, new_examples
from emergent.serving.keys import KeyStore
from emergent.stages import run_stage
from tests.conftest import ROOT, smoke_cfg
from tests.helpers import free_port, stub_models, stub_settings, wait_ready


@pytest.mark.parametrize(
    ("drift", "new", "force", "expected"),
    [
        (True, 0, False, "drift flagged by the monitor"),
        (False, 5, False, "5 new labelled examples >= loop.min_new_examples=5"),
        (None, 0, True, "forced (loop.force=true)"),
        (None, 4, False, None),
        (False, 0, False, None),
    ],
)
def test_trigger_reasons(drift: bool | None, new: int, force: bool, expected: str | None) -> None:
    assert Trigger(drift, new, 5, force).reason == expected


def test_trigger_gives_every_reason_that_holds() -> None:
    reason = Trigger(True, 9, 5, True).reason
    assert reason == (
        "forced (loop.force=true); drift flagged by the monitor; "
        "9 new labelled examples >= loop.min_new_examples=5"
    )


ROWS = [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "d")]  # (id, sha256): "a" sent twice


def test_new_examples_without_a_champion_or_its_feedback_counts_distinct_rows() -> None:
    assert new_examples(ROWS, None, None) == 4
    tags = {"feedback_sha256": "none", "feedback_examples": "none"}
    assert new_examples(ROWS, tags, {"last_feedback_id": 4, "sha256": {}}) == 4


def test_new_examples_after_the_export_the_champion_trained_on() -> None:
    tags = {"feedback_sha256": "T", "feedback_examples": "2"}
    summary = {"last_feedback_id": 3, "sha256": {"train.jsonl": "T"}}
    # rows 1-3 were exported for the champion ("a" at 3 is a copy of 1): "c" and "d" are new
    assert new_examples(ROWS, tags, summary) == 2
    # the export was redone since (another hash): distinct rows less what the champion saw
    other = {"last_feedback_id": 5, "sha256": {"train.jsonl": "U"}}
    assert new_examples(ROWS, tags, other) == 2
    assert new_examples(ROWS, {**tags, "feedback_examples": "9"}, other) == 0


def test_experiment_command_puts_the_task_into_the_targets() -> None:
    args = experiment.command(["dvc", "exp", "run"], ["ingest", "export@{task}"], "sentiment")
    assert args == ["dvc", "exp", "run", "ingest", "export@sentiment"]


def test_failed_experiment_is_one_error_with_its_output(tmp_path: Path) -> None:
    script = [sys.executable, "-c", "import sys; print('stage export@x failed'); sys.exit(2)"]
    with pytest.raises(StageError, match=r"failed \(exit 2\).*\n.*stage export@x failed"):
        experiment.run(script, tmp_path, 30)
    with pytest.raises(StageError, match=r"loop\.experiment\.timeout_s=0\.5"):
        experiment.run([sys.executable, "-c", "import time; time.sleep(5)"], tmp_path, 0.5)


HOLD = "import sys, time; from emergent.loop.lock import hold\nwith hold(sys.argv[1]):\n" \
    "    print('held', flush=True); time.sleep(60)\n"  # fmt: skip


def test_a_second_loop_is_refused_and_a_killed_one_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "loop.lock"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = rf"another loop is running \(pid {holder.pid} "
        with pytest.raises(StageError, match=busy), lock.hold(path):
            pytest.fail("the lock was taken twice")
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the OS drops the flock
        holder.wait(10)
    with lock.hold(path):
        assert path.read_text() == str(os.getpid())


@pytest.fixture
def stub_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A real service on a free loopback port whose sentiment version is `state["version"]`
    at each (re)load."""
    import uvicorn

    from emergent.serving.app import create_app
    from emergent.serving.slots import Source

    stub_models(monkeypatch)
    state: dict = {"version": "1"}
    _, key = KeyStore.load(tmp_path / "keys.json").add(["admin"])
    source = lambda: Source("sentiment", tmp_path, "emergent-sentiment", state["version"])  # noqa: E731
    settings = stub_settings(tmp_path, sources={"sentiment": source})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    state.update(url=f"http://127.0.0.1:{port}", key=key)
    wait_ready(state["url"], timeout=30)
    yield state
    server.should_exit = True
    thread.join(10)


def test_reload_waits_until_the_service_serves_the_new_version(stub_service: dict) -> None:
    url, key = stub_service["url"], stub_service["key"]
    stub_service["version"] = "2"
    before = service.reload_and_wait(url, key, "sentiment", "2", timeout_s=10, interval_s=0.05)
    assert before == "1"
    import httpx

    assert service.served_version(httpx.Client(base_url=url), "sentiment") == "2"


def test_reload_errors_name_what_the_service_said(stub_service: dict) -> None:
    url, key = stub_service["url"], stub_service["key"]
    with pytest.raises(StageError, match="POST /admin/reload answered 401"):
        service.reload_and_wait(url, "em_bad", "sentiment", "2", 5, 0.05)
    # the alias did not move (same version resolved): the poll times out with one line
    start = time.monotonic()
    with pytest.raises(StageError, match=r"still reports sentiment version 1 after .*=0.5, not"):
        service.reload_and_wait(url, key, "sentiment", "3", 0.5, 0.05)
    assert time.monotonic() - start < 5


def test_iteration_with_nothing_to_do_exits_10_and_writes_its_report(tmp_path: Path) -> None:
    cfg = smoke_cfg(
        "task=sentiment",
        "loop.service_url=null",
        f"serve.store.path={tmp_path / 'requests.db'}",
        f"loop.reports_dir={tmp_path / 'reports'}",
        f"loop.lock_file={tmp_path / 'loop.lock'}",
        tmp=tmp_path,
    )
    paths = Paths(tmp_path, tmp_path / "out")
    with pytest.raises(NothingToDo, match="drift not checked, 0 new labelled examples") as err:
        run_stage("loop", cfg, paths, task="sentiment")
    assert err.value.exit_code == 10
    (report,) = (tmp_path / "reports").glob("*.json")
    found = json.loads(report.read_text())
    assert (found["outcome"], found["exit_code"], found["trigger"]) == ("nothing to do", 10, None)
    assert found["new_examples"] == 0 and found["champion_before"] is None
    # a second loop while one holds the lock does nothing and says so
    with lock.hold(tmp_path / "loop.lock"), pytest.raises(StageError, match="another loop"):
        run_stage("loop", cfg, paths, task="sentiment")
    assert len(list((tmp_path / "reports").glob("*.json"))) == 1


def test_a_missing_admin_key_fails_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMERGENT_LOOP_TEST_KEY", raising=False)
    cfg = smoke_cfg(
        "task=sentiment",
        "loop.force=true",
        "loop.admin_key_env=EMERGENT_LOOP_TEST_KEY",
        f"loop.reports_dir={tmp_path / 'reports'}",
        f"loop.lock_file={tmp_path / 'loop.lock'}",
        tmp=tmp_path,
    )
    with pytest.raises(StageError, match=r"loop.admin_key_env: \$EMERGENT_LOOP_TEST_KEY is empty"):
        run_stage("loop", cfg, Paths(tmp_path, tmp_path / "out"), task="sentiment")
    (report,) = (tmp_path / "reports").glob("*.json")
    assert json.loads(report.read_text())["outcome"] == "error"
