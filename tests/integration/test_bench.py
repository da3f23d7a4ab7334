"""Benchmarks run end to end on smoke models and report every ratio (no timing asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emergent.config import Paths
from emergent.schema import validate_config
from emergent.tasks import get_task
from tests.conftest import smoke_cfg, smoke_settings

# Times pretraining, fine-tuning and inference on the session's smoke models.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pretrain_bench_reports_lightning_manual_and_precision_ratios(
    smoke_pretrained: Path,
) -> None:
    from emergent.bench import pretrain

    result = pretrain.run(smoke_settings(), Paths.for_dvc(smoke_pretrained), rounds=1, steps=4)
    assert set(result["tokens_per_second"]) == {
        "lightning_fp32",
        "manual_fp32",
        "lightning_bf16",
        "manual_bf16",
    }
    assert all(v > 0 for v in result["tokens_per_second"].values())


def test_inference_bench_on_the_exported_package(smoke_pretrained: Path, exported: Path) -> None:
    from emergent.bench import inference

    cfg = smoke_cfg()
    result = inference.run(
        validate_config(cfg),
        Paths.for_dvc(smoke_pretrained),
        get_task(cfg, "sentiment"),
        runs1=3,
        runs32=2,
    )
    assert set(result["variants"]) == {"fp32_torch", "fp32_onnx", "int8_onnx"}
    assert {"cpu_model", "avx2", "avx512_vnni", "avx512_bf16", "amx"} <= set(result["cpu"])
    assert result["cpu"]["torch_cpu_capability"]
    package = smoke_pretrained / "models/export/sentiment"
    on_disk = (package / "model.int8.onnx").stat().st_size / 2**20
    assert result["variants"]["int8_onnx"]["size_mb"] == pytest.approx(on_disk)
    assert result["ratios"]["fp32_vs_int8_size"] > 1.5, "int8 weights are smaller than fp32"
    assert set(result["targets_met"]) == set(result["targets"])
    low, high = result["metric_drop_ci"]
    assert low <= result["metric_drop_points"] <= high


def test_finetune_bench_reports_fp32_bf16_speed_and_metric_change(smoke_pretrained: Path) -> None:
    from emergent.bench import finetune

    cfg = smoke_cfg()
    paths, task = Paths.for_dvc(smoke_pretrained), get_task(cfg, "sentiment")
    result = finetune.run(cfg, validate_config(cfg), paths, task, steps=2)
    fp32, bf16 = result["variants"]["fp32"], result["variants"]["bf16"]
    assert fp32["steps"] == bf16["steps"] == 2
    assert fp32["tokens_per_second"] > 0 and bf16["tokens_per_second"] > 0
    # The metric is test accuracy in points: a whole number of the test texts right.
    n_test = len((smoke_pretrained / "data/prepared/sentiment/test.jsonl").read_text().splitlines())
    for variant in (fp32, bf16):
        correct = variant["test_metric"] * n_test / 100
        assert correct == pytest.approx(round(correct), abs=1e-6)
