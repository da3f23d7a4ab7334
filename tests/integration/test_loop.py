"""The continuous-training loop end to end, with real parts: DVC, MLflow's registry, the gate,
the service as a process on 127.0.0.1, its request store and the drift monitor.

Domain A is the default sentiment data (movie reviews). Domain B is short product reviews
built here from templates: another vocabulary (products, delivery, charging) and other
lengths, which is a shift the monitor's features see (length, token count, unknown-token
share, confidence). No installed package ships labelled text of another domain, so B is made.
At smoke size a model trained on A is near chance on anything, so B's labels follow words
A never uses ("arrived cracked" is negative): A's champion cannot know them and a challenger
trained on B's feedback can, which makes a gain whose interval excludes zero reachable.

1. The champion (`dvc exp run export@sentiment`, then `promote`) is served from the registry.
2. B traffic arrives; B feedback is posted; `loop` sees drift and new examples, trains the
   challenger (`dvc exp run` with the feedback as a dep of ingest), the gate promotes it, the
   service reloads: a client sending requests through the swap sees no failure and the
   version changes exactly once.
3. Label-flipped B feedback, twice as much as the clean feedback: the challenger learns the
   flipped labels and wins on the feedback test split, which is drawn from the same poisoned
   feedback. What refuses it is the test split the team trusts: the team adds a small
   hand-labelled B test file (`data.sentiment.test`, the source's own CSV shape) to the
   challenger's experiment, the champion knows B and the challenger has it backwards, so the
   gate's test rule (a drop beyond the tolerance with an interval below zero) refuses: exit 3,
   champion and service unchanged. Order numbers are random in every batch, so no token tells
   a flipped review from a clean one (a batch-numbered order let the challenger learn both).
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from emergent.serving.keys import KeyStore
from tests.conftest import copy_project, git_env, run_cmd
from tests.helpers import free_port, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = """# @package _global_
# the smoke preset, served from the registry, with a feedback split large enough to decide
defaults:
  - smoke
feedback:
  test_percent: 40
# the smoke champion answers about one class with one confidence whatever the text, so only
# the text features (length, token count, unknown-token share) can show the shift
monitor:
  drift_share: 0.4
finetune:
  shared:
    limit_train_batches: null  # every batch: the smoke preset's 4 would see few B examples
  sentiment:
    max_epochs: 4
serve:
  source: registry
  tasks: [sentiment]
  limits:
    rate_per_second: 0.0
  masking:
    enabled: false
"""
# the challenger reads the feedback (the champion was trained without any)
WITH_FEEDBACK = (
    "loop.experiment.command=[dvc,exp,run,-S,'data.sentiment.feedback=data/feedback/sentiment']"
)

PRODUCTS = ["blender", "kettle", "charger", "headset", "toaster", "router", "keyboard", "lamp"]
GOOD = ["arrived early and works", "battery lasts all week", "sturdy and quiet", "five stars"]
BAD = ["arrived cracked", "stopped charging", "died after a week", "refund requested"]
MAX_REQUESTS = 20000  # the swap client's bound (with its time bound, the loop's timeout)


def domain_b(n: int, seed: int, flip: bool = False) -> list[dict[str, str]]:
    """`n` product reviews, half of each label; labels by the phrase (swapped with `flip`).

    Order numbers are drawn from one range for every batch: nothing in a text says which
    batch (clean or flipped) it came from."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        phrase = rng.choice(GOOD if good else BAD)
        text = f"the {rng.choice(PRODUCTS)} {phrase}, order {rng.randrange(10**6):06d}"
        rows.append({"text": text, "label": "positive" if good != flip else "negative"})
    return rows


def trusted_b_test(root: Path) -> str:
    """A hand-labelled B test file in the source's CSV shape (raw labels fresh/rotten, mapped
    by `data.sentiment.label_map`); returns its path relative to the project."""
    path = root / "data" / "curated" / "sentiment_b_test.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = {"positive": "fresh", "negative": "rotten"}
    rows = [f'"{r["text"]}",{raw[r["label"]]}' for r in domain_b(200, seed=3)]
    path.write_text("text,category\n" + "\n".join(rows) + "\n")
    return str(path.relative_to(root))


def project(tmp: Path) -> Path:
    root = copy_project(tmp / "project")
    (root / "conf" / "experiment" / "loop_e2e.yaml").write_text(EXPERIMENT)
    config = root / "conf" / "config.yaml"
    config.write_text(config.read_text().replace("- experiment: null", "- experiment: loop_e2e"))
    done = run_cmd([sys.executable, "-m", "emergent.config"], cwd=root, root=root)
    assert done.returncode == 0, done.stderr[-3000:]
    env = git_env()
    for args in (["add", "-A"], ["commit", "-q", "-m", "loop e2e preset"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True)
    return root


def loop(root: Path, url: str, experiment: str = WITH_FEEDBACK) -> subprocess.CompletedProcess:
    args = ["loop", "task=sentiment", f"loop.service_url={url}", "loop.min_new_examples=40"]
    return run_cmd(
        [sys.executable, "-m", "emergent", *args, experiment],
        cwd=root,
        root=root,
        timeout=900,
    )


def last_report(root: Path) -> dict:
    reports = sorted((root / "reports" / "loop" / "iterations").glob("*.json"))
    return json.loads(reports[-1].read_text())


def test_loop_promotes_on_shifted_feedback_and_refuses_flipped_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = project(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    built = run_cmd(["dvc", "exp", "run", "export@sentiment"], cwd=root, root=root, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    first = run_cmd(
        [sys.executable, "-m", "emergent", "promote", "task=sentiment"], cwd=root, root=root
    )
    assert first.returncode == 0 and "first promotion" in first.stdout, first.stderr[-3000:]

    _, key = KeyStore.load(root / "secrets" / "keys.json").add(["predict", "feedback", "admin"])
    monkeypatch.setenv("EMERGENT_ADMIN_KEY", key)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "emergent", "serve", f"serve.port={port}"],
        cwd=root,
        env={**git_env(), "EMERGENT_ROOT": str(root)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(url, timeout=120, proc=server)
        client = httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30)

        def predict(texts: list[str]) -> httpx.Response:
            return client.post("/v1/sentiment/predict", json={"texts": texts})

        assert predict(["a fine film"]).json()["version"] == "1"
        # B traffic (the monitor's window) and B feedback
        for row in domain_b(60, seed=7):
            assert predict([row["text"]]).status_code == 200
        store = root / "monitoring" / "requests.db"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite3.connect(store) as db:
                if db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] >= 61:
                    break
            time.sleep(0.2)
        feedback = domain_b(500, seed=1)
        for start in range(0, len(feedback), 50):
            sent = client.post(
                "/v1/sentiment/feedback", json={"examples": feedback[start : start + 50]}
            )
            assert sent.status_code == 201, sent.text

        # the swap: a client sends requests until the loop is done
        seen: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def traffic() -> None:
            texts = [r["text"] for r in domain_b(50, seed=9)]
            end = time.monotonic() + 900
            while not stop.is_set() and len(seen) < MAX_REQUESTS and time.monotonic() < end:
                try:
                    answer = predict([texts[len(seen) % len(texts)]])
                    seen.append((answer.status_code, answer.json().get("version")))
                except httpx.HTTPError as err:
                    seen.append((0, repr(err)))
                time.sleep(0.1)

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        promoted = loop(root, url)
        time.sleep(1.0)  # a few answers after the swap
        stop.set()
        thread.join(30)
        report = last_report(root)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr[-4000:] + str(report)
        assert report["drift"]["drift"] is True and report["new_examples"] == 500
        assert (report["champion_before"], report["champion_after"]) == ("1", "2")
        decision = json.loads(Path(report["decision_file"]).read_text())
        gains = {s["name"]: s for s in decision["example_sets"]}
        assert gains["feedback_test"]["ci_low"] > 0 and gains["test"]["verdict"] == "pass"
        failures = [s for s in seen if s[0] != 200]
        assert seen and not failures, failures[:5]
        versions = [v for _, v in seen]
        changes = [v for v, _ in itertools.groupby(versions)]
        assert changes == ["1", "2"], changes
        assert predict(["the kettle arrived cracked"]).json()["version"] == "2"

        # label-flipped feedback outnumbers the clean; a trusted B test file refuses it
        flipped = domain_b(1000, seed=2, flip=True)
        for start in range(0, len(flipped), 50):
            sent = client.post(
                "/v1/sentiment/feedback", json={"examples": flipped[start : start + 50]}
            )
            assert sent.status_code == 201, sent.text
        trusted = f"-S,'data.sentiment.test={trusted_b_test(root)}'"
        refused = loop(root, url, WITH_FEEDBACK.removesuffix("]") + f",{trusted}]")
        report = last_report(root)
        assert refused.returncode == 3, refused.stdout + refused.stderr[-4000:] + str(report)
        assert report["outcome"] == "refused" and report["champion_after"] == "2"
        assert report["new_examples"] == 1000 and report["champion_before"] == "2"
        decision = json.loads(Path(report["decision_file"]).read_text())
        verdicts = {s["name"]: s for s in decision["example_sets"]}
        assert verdicts["test"]["verdict"] == "refuse", verdicts
        assert verdicts["test"]["examples"] == 200 and verdicts["test"]["ci_high"] < 0
        models = client.get("/v1/models").json()["models"]
        assert [m["version"] for m in models] == ["2"]
        after = run_cmd(
            [sys.executable, "-c", "from emergent.registry.versions import alias_version;"
             "print(alias_version('sentiment', 'champion').version)"],
            cwd=root, root=root,
        )  # fmt: skip
        assert after.stdout.strip() == "2", after.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(30)
        log.close()
