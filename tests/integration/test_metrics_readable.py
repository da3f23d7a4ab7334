"""`dvc metrics show` stays readable: metrics/*.json hold headline figures, details live in
reports/. Checked on the metrics files of a smoke run, through DVC itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emergent.config import Paths
from emergent.models.summary import COST_FIGURES
from emergent.stages import run_stage
from tests.conftest import run_cmd, smoke_cfg

# A column is one leaf of one metrics file in `dvc metrics show`; more than this per file is
# a detail table that belongs in reports/.
MAX_COLUMNS_PER_FILE = 25
DETAIL_KEYS = {"per_class", "per_type", "datasets", "confusion", "history"}
EXPORT_CONTRACT = {"metric", "size_mb", "latency_ms_p50", "throughput"}


def leaves(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.slow
def test_smoke_metrics_are_headline_figures(
    exported: Path,
    smoke_pretrained: Path,
    project_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Read the shared fixture; write metrics (and MLflow runs) into this test's folder only.
    out = tmp_path / "run"
    shutil.copytree(smoke_pretrained / "metrics", out / "metrics")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    paths = Paths(smoke_pretrained, out)
    run_stage("validate", smoke_cfg(), paths)
    for task in ("ner", "sentiment"):
        run_stage("evaluate", smoke_cfg(), paths, task=task)
    written = sorted((out / "metrics").glob("*.json"))
    names = {p.name for p in written}
    assert {"quality.json", "pretrain.json", "ner.json", "sentiment.json"} <= names
    assert {"export_ner.json", "export_sentiment.json"} <= names

    # Through DVC, in a committed copy of the project holding these metrics files.
    shutil.rmtree(project_copy / "metrics", ignore_errors=True)
    shutil.copytree(out / "metrics", project_copy / "metrics")
    shown = run_cmd(["dvc", "metrics", "show", "--json"], cwd=project_copy, timeout=120)
    assert shown.returncode == 0, shown.stderr
    files = json.loads(shown.stdout)[""]["data"]
    columns = {name: leaves(entry["data"]) for name, entry in files.items() if "data" in entry}
    # Class names as the models know them (IOB2 tags reduced to their entity type).
    class_names = {
        label.split("-", 1)[-1]
        for task in ("ner", "sentiment")
        for label in json.loads((smoke_pretrained / "models" / task / "labels.json").read_text())
    }
    for name, flat in columns.items():
        keys = {part for key in flat for part in key.split(".")}
        assert not keys & DETAIL_KEYS, f"{name} holds details: {keys & DETAIL_KEYS}"
        assert not keys & class_names, f"{name} holds per-class keys: {keys & class_names}"
        assert len(flat) <= MAX_COLUMNS_PER_FILE, f"{name}: {len(flat)} columns"
    for task in ("ner", "sentiment"):
        # Training cost (timings that differ on every run) is a report, not a DVC metric.
        assert not set(columns[f"metrics/{task}.json"]) & set(COST_FIGURES)
        details = json.loads((out / "reports" / task / "details.json").read_text())
        assert details["training"]["train_seconds"] > 0
        export = json.loads((project_copy / "metrics" / f"export_{task}.json").read_text())
        for variant in ("fp32_torch", "fp32_onnx", "int8_onnx"):
            assert set(export[variant]) >= EXPORT_CONTRACT
    total = sum(len(flat) for flat in columns.values())
    print(f"dvc metrics show: {total} columns over {len(columns)} files")
    assert total <= MAX_COLUMNS_PER_FILE * len(columns)
