"""Export, parity gate, registry aliases, prediction and serving on smoke models."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import mlflow
import pytest
from pytest import approx

from emergent.config import Paths, finetune_config
from emergent.io import sha256_file, write_jsonl
from emergent.schema import validate_config
from emergent.serving.slots import registered_name
from emergent.stages import StageError, run_stage
from emergent.tasks import Task, get_task
from tests.conftest import EXPORTED_TASKS, ROOT, git_env, run_cmd, smoke_cfg
from tests.helpers import copy_sqlite, free_port, known_packages

# Every test here reads the session's fine-tuned and exported smoke models (minutes to build).
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def registry(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the session's registry: aliases set by one test stay in that test."""
    db = tmp_path / "registry.db"
    copy_sqlite(exported, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    return db


VARIANTS = ("fp32_torch", "fp32_onnx", "int8_onnx")


@cache
def task_of(name: str) -> Task:
    """The smoke config's task `name` (composed once: parametrisation asks it at collection)."""
    return get_task(smoke_cfg(), name)


@dataclass(frozen=True)
class Shipped:
    """What the export stage shipped for one task of the session's `exported` fixture."""

    task: Task
    package: Path  # models/export/<task>
    metrics: dict  # metrics/export_<task>.json
    details: dict  # the package's export.json
    model_config: dict  # the fine-tuned model's config.json (what the export started from)
    curve: list[dict[str, str]]  # plots/export/<task>_prune.csv, one row per candidate

    @property
    def pruning(self) -> dict:
        return self.details["pruning"]


@pytest.fixture(params=EXPORTED_TASKS)
def shipped(request: pytest.FixtureRequest, smoke_pretrained: Path, exported: Path) -> Shipped:
    name = request.param
    root = smoke_pretrained
    package = root / "models" / "export" / name
    with (root / "plots" / "export" / f"{name}_prune.csv").open(encoding="utf-8") as f:
        curve = list(csv.DictReader(f))
    return Shipped(
        task=task_of(name),
        package=package,
        metrics=json.loads((root / "metrics" / f"export_{name}.json").read_text()),
        details=json.loads((package / "export.json").read_text()),
        model_config=json.loads((root / "models" / name / "config.json").read_text()),
        curve=curve,
    )


def test_the_package_holds_both_onnx_models_tokenizer_labels_and_card(shipped: Shipped) -> None:
    names = ("model.onnx", "model.int8.onnx", "tokenizer.json", "labels.json", "MODEL_CARD.md")
    assert [n for n in (*names, "export.json") if not (shipped.package / n).is_file()] == []


def test_the_export_json_loads_typed_and_holds_the_metrics_files_figures(
    shipped: Shipped, tmp_path: Path
) -> None:
    """What the stage wrote is what `ExportInfo` reads and writes back, byte for byte, and the
    metrics file is its headline figures (one source for both files)."""
    from emergent.export.pipeline import headline_figures
    from emergent.serving.package import ExportInfo

    info = ExportInfo.load(shipped.package)
    assert info.task == shipped.task.name and info.variants == shipped.details["variants"]
    assert info.save(tmp_path).read_bytes() == (shipped.package / "export.json").read_bytes()
    assert headline_figures(info) == shipped.metrics


def test_the_metrics_hold_one_measured_entry_per_variant(shipped: Shipped) -> None:
    for variant in VARIANTS:
        assert {"metric", "size_mb", "latency_ms_p50", "throughput"} <= set(
            shipped.metrics[variant]
        )
        assert shipped.metrics[variant]["throughput"] > 0
    # the rest are flat figures (DVC's metrics table shows nested dicts badly)
    assert not any(isinstance(v, dict) for k, v in shipped.metrics.items() if k not in VARIANTS)


def test_the_fp32_onnx_twin_scores_what_the_pruned_pytorch_model_scores(shipped: Shipped) -> None:
    assert shipped.details["parity"]["max_abs_logit_diff"] < smoke_cfg().export.parity_atol
    assert shipped.metrics["fp32_onnx"]["metric"] == approx(shipped.pruning["metric_torch"])


def test_the_int8_model_is_smaller_than_the_fp32_one(shipped: Shipped) -> None:
    assert shipped.metrics["int8_onnx"]["size_mb"] < shipped.metrics["fp32_onnx"]["size_mb"]


def test_both_graphs_take_word_shapes_exactly_when_the_task_reads_them(shipped: Shipped) -> None:
    """The smoke config turns word shapes on for every task that reads them (`reads_shapes`):
    a third graph input, through fp32, int8 and pruning."""
    import onnx

    expected = ["input_ids", "attention_mask"] + ["word_shape_ids"] * shipped.task.reads_shapes
    assert bool(shipped.model_config.get("word_shapes")) == shipped.task.reads_shapes
    for name in ("model.onnx", "model.int8.onnx"):
        graph = onnx.load(str(shipped.package / name)).graph
        assert [i.name for i in graph.input] == expected, name


@pytest.mark.parametrize("name", [t for t in EXPORTED_TASKS if task_of(t).pools])
def test_a_pooled_head_is_exported_with_the_configured_pooling(
    name: str, smoke_pretrained: Path, exported: Path
) -> None:
    config = json.loads((smoke_pretrained / "models" / name / "config.json").read_text())
    assert config["classifier_pooling"] == finetune_config(smoke_cfg(), name).pooling


@pytest.mark.parametrize("name", [t for t in EXPORTED_TASKS if task_of(t).learns_transitions])
def test_learned_transition_scores_ride_in_the_package(
    name: str, smoke_pretrained: Path, exported: Path
) -> None:
    """A token task trains a CRF (the default): its scores, the very ones the fine-tuned model
    saved, one per label and label pair, are in the package's task definition, and the server
    decodes with them."""
    from emergent.serving.predictor import load_package

    package = smoke_pretrained / "models" / "export" / name
    config = json.loads((smoke_pretrained / "models" / name / "config.json").read_text())
    labels = json.loads((package / "labels.json").read_text())
    scores = json.loads((package / "export.json").read_text())["task_spec"]["tag_scores"]
    assert scores == config["crf_scores"]
    assert len(scores["start"]) == len(scores["end"]) == len(labels)
    assert [len(row) for row in scores["transitions"]] == [len(labels)] * len(labels)
    assert any(v != 0.0 for row in scores["transitions"] for v in row)  # they trained
    assert load_package(package)[2].tag_scores == scores


def test_the_most_pruned_candidate_ships_with_every_layer_fused(shipped: Shipped) -> None:
    """Under the smoke preset's wide max_metric_drop (near-chance models, see smoke.yaml) the
    highest level ships; the curve has one row per level, each with the full and the pruned
    vocabulary."""
    cfg = smoke_cfg()
    level = max(cfg.export.prune.levels)
    layers = cfg.model.config.num_hidden_layers
    assert shipped.pruning["level"] == level
    assert shipped.pruning["heads_per_layer"] == cfg.model.config.num_attention_heads * (1 - level)
    fused = shipped.pruning["fused_ops"]
    assert (fused["Attention"], fused["LayerNormalization"]) == (layers, 2 * layers)
    assert "SkipLayerNormalization" not in fused  # export.skip_layer_norm: false
    assert len(shipped.curve) == 2 * len(cfg.export.prune.levels)


def test_the_session_runs_the_graph_the_export_chose(shipped: Shipped) -> None:
    """On load ONNX Runtime fuses a residual Add and LayerNorm into SkipLayerNormalization
    unless told not to; the package's LayerNorms stay apart, each attention block is one
    QAttention."""
    from emergent.serving.package import MODEL_FILE
    from emergent.serving.runtime import session_ops

    layers = smoke_cfg().model.config.num_hidden_layers
    ops = session_ops(shipped.package / MODEL_FILE)
    assert (ops["QAttention"], ops["LayerNormalization"]) == (layers, 2 * layers)
    assert "SkipLayerNormalization" not in ops


def test_the_gate_judged_the_shipped_row_by_the_configured_rule(shipped: Shipped) -> None:
    """(The choice rule itself: tests/unit/test_pruning.py.)"""
    size = shipped.pruning["size_mb"]
    rows = [r for r in shipped.curve if float(r["size_mb"]) == approx(size)]
    assert len(rows) == 1, "one curve row is the shipped model"
    parity = shipped.details["parity"]
    assert float(rows[0]["val_drop"]) == approx(parity["int8_val_drop"])
    # every candidate was scored with the int8 scheme it would ship with (auto: its better one)
    assert rows[0]["per_channel"] == str(shipped.details["per_channel"])
    assert {r["per_channel"] for r in shipped.curve} <= {"True", "False"}
    cfg = smoke_cfg()
    assert (parity["max_metric_drop"], parity["drop_gate"]) == (
        cfg.export.max_metric_drop,
        cfg.export.drop_gate,
    )


@pytest.mark.parametrize("split", ["int8_val_drop", "int8_drop"])
def test_each_int8_drop_has_a_bootstrap_interval_around_it(shipped: Shipped, split: str) -> None:
    """The validation and the test drop, each with its paired bootstrap interval, in export.json
    and in the metrics."""
    parity = shipped.details["parity"]
    low, high = parity[f"{split}_ci"]
    assert low <= parity[split] <= high
    assert (shipped.metrics[f"{split}_ci_low"], shipped.metrics[f"{split}_ci_high"]) == (low, high)


def test_the_package_tokenizer_has_the_pruned_vocabulary(
    shipped: Shipped, smoke_pretrained: Path
) -> None:
    from transformers import AutoTokenizer

    full = json.loads((smoke_pretrained / "models/pretrained/config.json").read_text())
    pruned = shipped.pruning["vocab_size"]
    assert sorted({int(row["vocab_size"]) for row in shipped.curve}) == [pruned, full["vocab_size"]]
    assert AutoTokenizer.from_pretrained(str(shipped.package)).vocab_size == pruned
    assert pruned < full["vocab_size"]


def test_the_model_card_describes_the_shipped_variant_and_its_recovery(shipped: Shipped) -> None:
    card = (shipped.package / "MODEL_CARD.md").read_text()
    steps = smoke_cfg().export.prune.recover_steps
    assert "int8_onnx" in card and "Intended use" in card
    assert (
        f"Then fine-tuned {steps} steps on the training split, distilling from the unpruned" in card
    )


def test_the_registered_candidate_carries_the_int8_test_metric(
    shipped: Shipped, registry: Path
) -> None:
    from emergent.registry.versions import METRIC_TAG

    name = registered_name(shipped.task.name)
    version = mlflow.MlflowClient().get_model_version_by_alias(name, "candidate")
    assert float(version.tags[METRIC_TAG]) == approx(shipped.metrics["int8_onnx"]["metric"])


@pytest.mark.parametrize(
    ("gate", "reason"),
    [
        ({"parity_atol": 0.0}, "fp32 ONNX logits differ"),
        # A bound that no model meets (int8 would have to gain a point), judged by the point
        # estimate (`significant` would ship a drop whose interval reaches zero): the int8 branch.
        (
            {"max_metric_drop": -1.0, "drop_gate": "estimate"},
            r"int8 accuracy drops 0\.00 points",
        ),
    ],
)
def test_failed_gate_keeps_the_previous_package_and_figures(
    smoke_pretrained: Path, registry: Path, tmp_path: Path, gate: dict[str, Any], reason: str
) -> None:
    """Bounds no package meets: the schema refuses them in conf/ (a tolerance must be > 0, an
    allowed drop >= 0), so they are set on the typed settings the stage reads."""
    # Read the shared fixture, write into a private copy of what the stage may replace.
    shipped = ("models/export/sentiment", "metrics", "plots/export")
    for rel in shipped:
        shutil.copytree(smoke_pretrained / rel, tmp_path / rel)
    before = {
        p: p.read_bytes() for rel in shipped for p in (tmp_path / rel).rglob("*") if p.is_file()
    }
    cfg = smoke_cfg()
    settings = validate_config(cfg)
    settings.export = settings.export.model_copy(update=gate)
    with pytest.raises(StageError, match=f"parity gate failed: {reason}"):
        run_stage(
            "export", cfg, Paths(smoke_pretrained, tmp_path), task="sentiment", settings=settings
        )
    after = {
        p: p.read_bytes() for rel in shipped for p in (tmp_path / rel).rglob("*") if p.is_file()
    }
    assert "model.int8.onnx" in {p.name for p in before}
    assert after == before


def test_unpruned_export_with_both_int8_schemes(
    smoke_pretrained: Path, registry: Path, tmp_path: Path
) -> None:
    """`export.prune=null export.per_channel=auto`: no curve candidates are scored, so both int8
    models are scored here; the one kept is the more accurate on validation, and the one-row
    curve carries the shipped model's figures."""
    cfg = smoke_cfg("export.prune=null", "export.per_channel=auto")
    run_stage("export", cfg, Paths(smoke_pretrained, tmp_path), task="sentiment")
    details = json.loads((tmp_path / "models/export/sentiment/export.json").read_text())
    metrics = json.loads((tmp_path / "metrics/export_sentiment.json").read_text())
    assert details["pruning"] is None and isinstance(details["per_channel"], bool)
    curve = (tmp_path / "plots/export/sentiment_prune.csv").read_text().splitlines()
    assert len(curve) == 2
    row = dict(zip(curve[0].split(","), curve[1].split(","), strict=True))
    assert float(row["metric"]) == pytest.approx(metrics["int8_onnx"]["metric"])
    assert float(row["val_drop"]) == pytest.approx(details["parity"]["int8_val_drop"])


def test_promote_runs_the_gate_on_the_same_examples(
    smoke_pretrained: Path, registry: Path, tmp_path: Path
) -> None:
    from emergent.registry.versions import METRIC_TAG

    client = mlflow.MlflowClient()
    name = "emergent-sentiment"
    # the export registered the candidate with its lineage: no champion then, no feedback
    candidate = client.get_model_version_by_alias(name, "candidate")
    assert candidate.tags["parent_version"] == "none"
    assert candidate.tags["feedback_sha256"] == candidate.tags["feedback_examples"] == "none"
    prepared = tmp_path / "prepared"
    shutil.copytree(smoke_pretrained / "data" / "prepared" / "sentiment", prepared / "sentiment")
    reports = tmp_path / "loop"

    def promote() -> tuple[subprocess.CompletedProcess, dict]:
        done = run_cmd(
            [
                sys.executable, "-m", "emergent", "promote", "task=sentiment", "experiment=smoke",
                f"paths.input_dir={smoke_pretrained}", f"data.prepared_dir={prepared}",
                f"promote.reports_dir={reports}",
            ],
            cwd=tmp_path,
            root=ROOT,
        )  # fmt: skip
        latest = max(reports.glob("*.json"), default=None)
        return done, json.loads(latest.read_text()) if latest else {}

    first, record = promote()  # no champion yet: promoted without a comparison
    assert first.returncode == 0, first.stderr
    assert (record["outcome"], record["example_sets"]) == ("promoted", [])
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(
        candidate.version
    )

    # A new version of the same package: scored on the same test split, it ties the champion
    # to the example, and both figures are the int8 test metric the export registered.
    new = client.create_model_version(name, candidate.source, run_id=candidate.run_id)
    client.set_registered_model_alias(name, "candidate", new.version)
    second, record = promote()
    assert second.returncode == 0, second.stderr
    assert record["outcome"] == "promoted" and record["champion"]["version"] == str(
        candidate.version
    )
    (test,) = record["example_sets"]
    assert test["name"] == "test" and test["sha256"] == sha256_file(
        prepared / "sentiment" / "test.jsonl"
    )
    metric = float(candidate.tags[METRIC_TAG])
    assert test["champion"] == pytest.approx(metric, abs=1e-4)
    assert test["candidate"] == pytest.approx(metric, abs=1e-4)
    assert (test["gain"], test["ci_low"], test["ci_high"]) == (0.0, 0.0, 0.0)
    assert "test " in second.stdout and "promoted: emergent-sentiment candidate" in second.stdout
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(new.version)

    # Enough feedback test examples and no gain on them: refused, exit 3, champion kept.
    rows = [json.loads(line) for line in (prepared / "sentiment" / "test.jsonl").open()]
    write_jsonl(prepared / "sentiment" / "feedback_test.jsonl", (rows * 30)[:30])
    third = client.create_model_version(name, candidate.source, run_id=candidate.run_id)
    client.set_registered_model_alias(name, "candidate", third.version)
    refused, record = promote()
    assert refused.returncode == 3, refused.stderr
    assert "promotion refused by the gate: feedback_test" in refused.stderr
    assert record["outcome"] == "refused"
    assert [s["verdict"] for s in record["example_sets"]] == ["pass", "refuse"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == str(new.version)
    # one MLflow run per decision in the experiment `loop`
    runs = mlflow.search_runs(experiment_names=["loop"], output_format="list")
    assert sorted(r.data.tags["decision"] for r in runs) == ["promoted", "promoted", "refused"]
    assert all(r.data.tags["task"] == "sentiment" for r in runs)


def test_predict_cli_arguments_file_and_bad_input(
    smoke_pretrained: Path, registry: Path, tmp_path: Path
) -> None:
    def predict(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        env = git_env()
        env["EMERGENT_ROOT"] = str(ROOT)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "emergent",
                "predict",
                "experiment=smoke",
                f"paths.input_dir={smoke_pretrained}",
                *args,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=300,
        )

    # the smoke packages with lookup-table models: every answer is known (see known_packages)
    known = known_packages(smoke_pretrained / "models" / "export", tmp_path / "known")
    ner = ("task=ner", f"predict.export_dir={known / 'ner'}")
    sentiment = ("task=sentiment", f"predict.export_dir={known / 'sentiment'}")
    negative = {"label": "negative", "probabilities": {"negative": 0.7311, "positive": 0.2689}}
    positive = {"label": "positive", "probabilities": {"negative": 0.1192, "positive": 0.8808}}

    result = predict(*ner, "the great film is here", "hello there")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {
            "index": 0,
            "text": "the great film is here",
            "entities": [
                {"type": "person", "start": 4, "end": 14, "text": "great film", "score": 0.9}
            ],
        },
        {"index": 1, "text": "hello there", "entities": []},
    ]

    result = predict(*sentiment, stdin="a great movie\nawful\n")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"index": 0, "text": "a great movie", **positive},
        {"index": 1, "text": "awful", **negative},
    ]

    good = tmp_path / "in.jsonl"
    good.write_text('{"text": "fine"}\n{"text": "great"}\n', encoding="utf-8")
    result = predict(*sentiment, f"predict.file={good}")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"index": 0, "text": "fine", **negative},
        {"index": 1, "text": "great", **positive},
    ]

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe broken\n")
    result = predict(*sentiment, f"predict.file={bad}")
    assert result.returncode == 1 and "bad.txt:2: invalid utf-8" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    result = predict(*sentiment, "   ")
    assert result.returncode == 1 and "empty text" in result.stderr
    assert json.loads(result.stdout) == {"index": 0, "error": "empty text"}
    # a text past the window is truncated with a warning; "great" at its end is cut off
    long_text = " ".join(["word"] * 500 + ["great"])
    result = predict(*sentiment, long_text)
    assert result.returncode == 0 and "truncated" in result.stderr
    assert json.loads(result.stdout) == {"index": 0, "text": long_text, **negative}


def test_mlflow_serves_the_champion_over_http(registry: Path) -> None:
    from emergent.registry.versions import alias_version, set_champion

    candidate = alias_version("sentiment", "candidate")
    assert candidate is not None
    set_champion("sentiment", candidate.version)
    port = free_port()
    env = git_env()
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{registry}"
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [
            mlflow_bin,
            "models",
            "serve",
            "-m",
            "models:/emergent-sentiment@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = json.dumps(
            {"dataframe_split": {"columns": ["text"], "data": [["a wonderful film"]]}}
        ).encode()
        deadline = time.time() + 120
        response = None
        while time.time() < deadline and server.poll() is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as reply:
                    response = json.loads(reply.read())
                break
            except OSError:
                time.sleep(1)
        assert response is not None, server.stdout.read() if server.poll() is not None else ""
        prediction = response["predictions"][0]
        assert prediction["label"] in {"negative", "positive"}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_export_fp32_metric_equals_the_evaluate_metric(
    smoke_pretrained: Path, registry: Path, tmp_path: Path
) -> None:
    """One test set, one number: the export gate's fp32 PyTorch score is the evaluate stage's
    headline on the same model (evaluate writes into its own folder, not the shared one)."""
    run_stage("evaluate", smoke_cfg(), Paths(smoke_pretrained, tmp_path), task="sentiment")
    evaluated = json.loads((tmp_path / "metrics/sentiment.json").read_text())
    exported = json.loads((smoke_pretrained / "metrics/export_sentiment.json").read_text())
    assert exported["fp32_torch"]["metric"] == pytest.approx(100 * evaluated["accuracy"])


def test_recovery_does_not_depend_on_the_random_state_before_it(
    smoke_pretrained: Path, exported: Path
) -> None:
    """Each pruning level's recovery starts from the configured seed, so adding or removing
    another level (which draws random numbers first) cannot change this level's result."""
    import torch

    from emergent.export.recover import recover
    from emergent.models.finetuned import load_finetuned
    from emergent.tasks import get_task

    cfg = smoke_cfg()
    settings = validate_config(cfg)
    task = get_task(cfg, "sentiment")
    prepared = smoke_pretrained / settings.data.prepared_dir
    weights = []
    for draws in (0, 1000):
        model, tokenizer, labels = load_finetuned(task, smoke_pretrained / "models" / "sentiment")
        torch.rand(draws)  # another candidate's random numbers
        recover(model, tokenizer, task, labels, settings, prepared, 32, steps=3)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    original, _, _ = load_finetuned(task, smoke_pretrained / "models" / "sentiment")
    assert any(not torch.equal(weights[0][k], v) for k, v in original.state_dict().items())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_recovery_distils_from_the_unpruned_teacher(smoke_pretrained: Path, exported: Path) -> None:
    """With `export.prune.distill` the teacher's logits enter the recovery loss: the same seed
    and steps train different weights with and without the teacher, and pure distillation
    (alpha 1) brings a student that disagrees with its teacher closer to it."""
    import torch

    from emergent.export.recover import recover
    from emergent.models.finetuned import load_finetuned
    from emergent.tasks import get_task

    cfg = smoke_cfg("export.prune.distill.alpha=1.0")
    settings = validate_config(cfg)
    task = get_task(cfg, "sentiment")
    prepared = smoke_pretrained / settings.data.prepared_dir
    teacher, tokenizer, labels = load_finetuned(task, smoke_pretrained / "models" / "sentiment")
    batch = tokenizer(
        ["a fine film", "dull and long", "great fun"], return_tensors="pt", padding=True
    )

    def student() -> torch.nn.Module:
        model, _, _ = load_finetuned(task, smoke_pretrained / "models" / "sentiment")
        with torch.no_grad():  # a student that disagrees with its teacher
            model.classifier.bias.add_(torch.tensor([3.0, -3.0]))
        return model

    def distance(model: torch.nn.Module) -> float:
        """KL(teacher || model) over the batch."""
        with torch.no_grad():
            log_p = teacher(**batch).logits.log_softmax(-1)
            log_q = model(**batch).logits.log_softmax(-1)
        return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())

    plain, distilled = student(), student()
    before = distance(distilled)
    recover(plain, tokenizer, task, labels, settings, prepared, 32, steps=4)
    recover(distilled, tokenizer, task, labels, settings, prepared, 32, steps=4, teacher=teacher)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), distilled.state_dict().values(), strict=True)
    )
    assert distance(distilled) < before
