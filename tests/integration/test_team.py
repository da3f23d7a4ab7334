"""Team scale against the real engines: an MLflow server on a throw-away PostgreSQL cluster, a
DVC remote in a folder, queued experiments run two at a time, concurrent writers on SQLite and
on the server. No mocks: every check reads back what the engines stored.

The figures the concurrent-writer test prints (`pytest -s`) are the ones in docs/team.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pytest

from emergent.config import params_text
from tests.conftest import PROJECT_FILES, ROOT, git_env, smoke_cfg
from tests.helpers import (
    NO_POSTGRES,
    free_port,
    in_ci,
    postgres_bin,
    postgres_cluster,
    require,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# On a person's machine without PostgreSQL these skip; under CI (`.ci/run` installs it) they run.
needs_postgres = pytest.mark.skipif(postgres_bin() is None and not in_ci(), reason=NO_POSTGRES)

BIN = Path(sys.executable).parent
WRITERS, METRICS_PER_WRITER = 4, 500
# The smoke pipeline up to a registered model: ingest, tokenizer, pretrain, finetune, export.
TARGET = "export@sentiment"


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 240.0) -> float:
    """Seconds until `url` answers 200; fails with the log's tail if the process exits."""
    parts = urlsplit(url)
    start = time.monotonic()
    try:
        base = f"{parts.scheme}://{parts.netloc}"
        wait_ready(base, parts.path, timeout=timeout, proc=process, interval=0.25)
    except AssertionError as failed:
        raise AssertionError(f"{failed}: {log.read_text()[-3000:]}") from None
    return time.monotonic() - start


@contextmanager
def mlflow_server(backend: str, workdir: Path) -> Iterator[str]:
    """`mlflow server` as `make server` starts it (proxied artifacts, no job runner)."""
    port, log = free_port(), workdir / "mlflow.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                *(str(BIN / "mlflow"), "server", "--backend-store-uri", backend),
                *("--artifacts-destination", str(workdir / "artifacts")),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
            ],
            env={**git_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        seconds = wait_http(f"{uri}/health", process, log)
        print(f"\nmlflow server on PostgreSQL ready in {seconds:.1f} s")
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking server on a throw-away PostgreSQL cluster, for this module."""
    require(NO_POSTGRES if postgres_bin() is None else None)
    with (
        postgres_cluster() as backend,
        mlflow_server(backend, tmp_path_factory.mktemp("srv")) as uri,
    ):
        yield uri


def smoke_repo(dest: Path) -> Path:
    """A committed git + DVC copy of the project whose params.yaml is the smoke experiment."""
    dest.mkdir(parents=True)
    for rel in PROJECT_FILES:
        src, target = ROOT / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, target)
    (dest / "params.yaml").write_text(params_text(smoke_cfg()), encoding="utf-8")
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "smoke copy")
    return dest


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 1800) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def tree_sha256(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def start_writers(uri: str, experiment: str, barrier: Path) -> tuple[list[dict], float]:
    """WRITERS processes log METRICS_PER_WRITER metrics each at the same moment; their
    reports and the wall time of the writing (from the go signal to the last exit)."""
    barrier.mkdir(parents=True)
    env = git_env()
    processes = [
        subprocess.Popen(
            [
                *(sys.executable, str(ROOT / "tests" / "metric_writer.py"), uri, experiment),
                *(f"w{i}", str(METRICS_PER_WRITER), str(barrier)),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(WRITERS)
    ]
    deadline = time.monotonic() + 600
    while len(list(barrier.glob("ready-*"))) < WRITERS:
        failed = [p for p in processes if p.poll() not in (None, 0)]
        assert not failed, failed[0].stderr.read()[-3000:]
        assert time.monotonic() < deadline, "writers never got ready"
        time.sleep(0.1)
    start = time.monotonic()
    (barrier / "go").touch()
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports, time.monotonic() - start


def count_back(uri: str, reports: list[dict]) -> int:
    """Metrics missing from the store: each writer's `value` history must be steps 0..N-1."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    lost = 0
    for report in reports:
        history = client.get_metric_history(report["run_id"], "value")
        assert {m.step for m in history} <= set(range(METRICS_PER_WRITER))
        assert all(m.value == m.step for m in history)
        lost += METRICS_PER_WRITER - len({m.step for m in history})
    return lost


@pytest.mark.parametrize("store", ["sqlite", pytest.param("server", marks=needs_postgres)])
def test_four_writers_lose_no_metric(store: str, request: pytest.FixtureRequest, tmp_path) -> None:
    """Four processes open the store at once (on SQLite: a FRESH file, whose schema MLflow
    3.17 would otherwise create in all four at once and crash three) and log 500 metrics each
    as separate writes; every metric is read back."""
    if store == "sqlite":
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        experiment = "writers"
    else:
        uri = request.getfixturevalue("server")
        experiment = f"writers-{tmp_path.name}"
    reports, seconds = start_writers(uri, experiment, tmp_path / "barrier")
    assert len({r["run_id"] for r in reports}) == WRITERS
    lost = count_back(uri, reports)
    slowest = max(r["seconds"] for r in reports)
    print(
        f"\n{store}: {WRITERS} writers x {METRICS_PER_WRITER} metrics: {seconds:.1f} s wall, "
        f"slowest writer {slowest:.1f} s, {WRITERS * METRICS_PER_WRITER / seconds:.0f} "
        f"metrics/s, lost {lost}"
    )
    assert lost == 0
    if store == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "mlflow.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.fixture(scope="module")
def pipeline_on_server(server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke pipeline up to the sentiment export, run by `dvc repro` with the one setting
    `MLFLOW_TRACKING_URI=<server>`; dvc.lock committed."""
    root = smoke_repo(tmp_path_factory.mktemp("team") / "project")
    env = {**git_env(), "MLFLOW_TRACKING_URI": server}
    start = time.monotonic()
    run([str(BIN / "dvc"), "repro", TARGET], root, env)
    print(f"\nsmoke `dvc repro {TARGET}`: {time.monotonic() - start:.1f} s")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "repro")
    return root


@needs_postgres
def test_smoke_pipeline_logs_to_the_server(
    server: str, pipeline_on_server: Path, tmp_path: Path
) -> None:
    """Runs, metrics, proxied artifacts, the registered model and its aliases are read back
    from the server; `promote` and `serve serve.source=registry` work against it unchanged."""
    root, env = pipeline_on_server, {**git_env(), "MLFLOW_TRACKING_URI": server}
    assert not (root / "mlflow.db").exists(), "the sqlite default was used instead"
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("sentiment")
    assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
    runs = {r.data.tags["dvc_stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"finetune", "export"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    finetune = runs["finetune"]
    assert any(k.startswith("val") for k in finetune.data.metrics), finetune.data.metrics
    assert finetune.data.params["model.name"] == "tiny_bert"
    config = Path(client.download_artifacts(finetune.info.run_id, "config.yaml", str(tmp_path)))
    assert "tiny_bert" in config.read_text(encoding="utf-8")
    pretrain = client.get_experiment_by_name("pretrain")
    assert pretrain is not None and client.search_runs([pretrain.experiment_id])

    candidate = client.get_model_version_by_alias("emergent-sentiment", "candidate")
    assert candidate.run_id == runs["export"].info.run_id
    promoted = run([sys.executable, "-m", "emergent", "promote", "task=sentiment"], root, env)
    # the gate's last line is the decision; the first promotion needs no comparison
    assert promoted.strip().splitlines()[-1].startswith("promoted: emergent-sentiment candidate")
    champion = client.get_model_version_by_alias("emergent-sentiment", "champion")
    assert champion.version == candidate.version

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen(
            [
                *(sys.executable, "-m", "emergent", "serve", "serve.source=registry"),
                *(f"serve.port={port}", "serve.tasks=[sentiment]"),
                *(f"serve.keys_file={tmp_path / 'keys.json'}", f"serve.store.path={tmp_path}/r.db"),
                f"hydra.run.dir={tmp_path / 'hydra'}",
            ],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", serve, log)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/sentiment/predict",
            data=json.dumps({"texts": ["a fine film"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
    assert (body["model"], body["version"], body["alias"]) == (
        "emergent-sentiment",
        str(champion.version),
        "champion",
    )


@needs_postgres
def test_push_fresh_clone_pull_repro_runs_nothing(pipeline_on_server: Path, tmp_path) -> None:
    """`dvc push` to a folder remote; a fresh clone's `dvc pull` + `dvc repro` runs no stage
    and its models are byte-identical."""
    root, env = pipeline_on_server, git_env()
    remote = tmp_path / "remote"
    dvc = str(BIN / "dvc")
    run([dvc, "remote", "add", "--force", "--default", "team", str(remote)], root, env)
    git(root, "commit", "-q", "-am", "DVC remote")
    run([dvc, "push"], root, env)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    assert not (clone / "models").exists()
    start = time.monotonic()
    run([dvc, "pull", "--with-deps", TARGET], clone, env)  # what the repro ran (not all)
    pulled = time.monotonic() - start
    repro = run([dvc, "repro", TARGET], clone, env)
    reran = time.monotonic() - start - pulled
    print(f"\nfresh clone: dvc pull {pulled:.1f} s + dvc repro {reran:.1f} s")
    assert "Running stage" not in repro, repro
    assert tree_sha256(clone / "models") == tree_sha256(root / "models")
    status = run([dvc, "status", "--with-deps", TARGET], clone, env)
    assert "Data and pipelines are up to date." in status, status


@pytest.mark.parametrize("store", ["sqlite", pytest.param("server", marks=needs_postgres)])
def test_two_queued_experiments_both_finish(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`dvc exp run --queue -S ...` twice, then both at once (`--run-all -j 2`, the workers of
    `dvc queue start -j 2`): both in `dvc exp show` with metrics and in MLflow with their runs
    (the sqlite default: the parent repository's mlflow.db, not the deleted temp workspace's)."""
    root = smoke_repo(tmp_path / "project")
    env = git_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    if store == "server":
        uri = env["MLFLOW_TRACKING_URI"] = request.getfixturevalue("server")
    dvc = str(BIN / "dvc")
    names = {"exp-lr-a": "pretrain.optimizer.lr=0.001", "exp-lr-b": "pretrain.optimizer.lr=0.003"}
    for name, override in names.items():
        # DVC re-composes params.yaml from conf/ with Hydra: the smoke preset goes in every -S.
        smoke = ["-S", "experiment=smoke", "-S", override]
        run([dvc, "exp", "run", "--queue", "-n", name, *smoke, "pretrain"], root, env)
    try:
        run([dvc, "exp", "run", "--run-all", "-j", "2"], root, env, timeout=2400)
    finally:
        subprocess.run([dvc, "queue", "stop"], cwd=root, env=env, capture_output=True)
    shown = json.loads(run([dvc, "exp", "show", "--json"], root, env))
    experiments = {
        exp["name"]: exp
        for baseline in shown
        for e in baseline.get("experiments") or []
        for exp in e.get("revs", [])
    }
    assert set(names) <= set(experiments), list(experiments)
    for name in names:
        data = experiments[name]["data"]
        metrics = data["metrics"]["metrics/pretrain.json"]["data"]
        assert metrics["perplexity"] > 1 and metrics["skipped"] is False, metrics
        lr = data["params"]["params.yaml"]["data"]["pretrain"]["optimizer"]["lr"]
        assert lr == float(names[name].split("=")[1])
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    spans = {}
    for name, override in names.items():
        runs = client.search_runs(experiment_ids, f"tags.dvc_exp_name = '{name}'")
        stages = {r.data.tags["dvc_stage"]: r for r in runs}
        assert {"ingest", "validate", "pretrain"} <= set(stages), sorted(stages)
        assert all(r.info.status == "FINISHED" for r in runs)
        pretrain = stages["pretrain"]
        assert float(pretrain.data.params["pretrain.optimizer.lr"]) == float(override[-5:])
        assert pretrain.data.metrics["perplexity"] > 1
        spans[name] = (min(r.info.start_time for r in runs), max(r.info.end_time for r in runs))
    # Both ran at once: the two experiments' spans overlap.
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, spans


@pytest.mark.skipif(
    (shutil.which("pg_ctlcluster") is None or postgres_bin() is None) and not in_ci(),
    reason="Debian's PostgreSQL is not installed: `make server-deps` (apt-get install postgresql)",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="`make server` manages the system cluster: root")
def test_make_server_is_idempotent_and_stops(tmp_path: Path) -> None:
    """scripts/server.sh (what `make server` / `make server-stop` run) on the machine's Debian
    cluster, with a database of its own: ready with the URI printed, the second start reuses
    the running server, stop stops MLflow (and the cluster only if it started it)."""
    port, database = free_port(), f"emergent_test_{os.getpid()}"
    env = {**git_env(), "MLFLOW_PORT": str(port), "PG_DB": database, "SERVER_DIR": str(tmp_path)}
    script = str(ROOT / "scripts" / "server.sh")
    was_online = clusters_online()
    try:
        first = run([script, "start"], ROOT, env, timeout=600)
        assert first.strip() == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{first.strip()}/health", timeout=5) as response:
            assert response.status == 200
        start = time.monotonic()
        assert run([script, "start"], ROOT, env).strip() == first.strip()
        assert time.monotonic() - start < 10
        client = mlflow.MlflowClient(tracking_uri=first.strip())
        assert client.get_experiment_by_name("Default") is not None  # schema on PostgreSQL
    finally:
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True)
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "dropdb", "--if-exists", database],
            capture_output=True,
        )
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    assert clusters_online() == was_online


def clusters_online() -> list[str]:
    """The Debian clusters that are running (`pg_lsclusters`)."""
    out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    return [line.split()[1] for line in out.splitlines() if "online" in line]
