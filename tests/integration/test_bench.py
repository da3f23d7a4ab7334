"""Benchmarks run end to end on smoke models and report every ratio (no timing asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emergent.config import Paths
from tests.conftest import smoke_cfg

pytestmark = pytest.mark.integration


def test_pretrain_bench_reports_lightning_manual_and_precision_ratios(
    smoke_pretrained: Path,
) -> None:
    from emergent.bench import pretrain

    result = pretrain.run(smoke_cfg(), Paths.for_dvc(smoke_pretrained), rounds=1, steps=4)
    assert set(result["tokens_per_second"]) == {
        "lightning_fp32",
        "manual_fp32",
        "lightning_bf16",
        "manual_bf16",
    }
    assert all(v > 0 for v in result["tokens_per_second"].values())
    ratio = result["ratios"]["lightning_vs_manual_fp32"]
    tps = result["tokens_per_second"]
    assert ratio == pytest.approx(tps["lightning_fp32"] / tps["manual_fp32"])


def test_inference_bench_on_the_exported_package(smoke_pretrained: Path, exported: Path) -> None:
    from emergent.bench import inference

    result = inference.run(
        smoke_cfg(), Paths.for_dvc(smoke_pretrained), "sentiment", runs1=3, runs32=2
    )
    assert set(result["variants"]) == {"fp32_torch", "fp32_onnx", "int8_onnx"}
    assert {"cpu_model", "avx2", "avx512_vnni", "avx512_bf16", "amx"} <= set(result["cpu"])
    assert result["cpu"]["torch_cpu_capability"]
    assert result["ratios"]["fp32_vs_int8_size"] == pytest.approx(
        result["variants"]["fp32_onnx"]["size_mb"] / result["variants"]["int8_onnx"]["size_mb"]
    )
    assert set(result["targets_met"]) == set(result["targets"])


def test_finetune_bench_reports_fp32_bf16_speed_and_metric_change(smoke_pretrained: Path) -> None:
    from emergent.bench import finetune

    result = finetune.run(smoke_cfg(), Paths.for_dvc(smoke_pretrained), "sentiment", steps=2)
    fp32, bf16 = result["variants"]["fp32"], result["variants"]["bf16"]
    assert fp32["steps"] == bf16["steps"] == 2
    assert 0.0 <= fp32["test_metric"] <= 100.0 and fp32["tokens_per_second"] > 0
    assert result["bf16_metric_change_points"] == pytest.approx(
        bf16["test_metric"] - fp32["test_metric"]
    )
