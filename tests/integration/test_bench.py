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
    from emergent.tasks import get_task

    cfg = smoke_cfg()
    result = inference.run(
        cfg, Paths.for_dvc(smoke_pretrained), get_task(cfg, "sentiment"), runs1=3, runs32=2
    )
    assert set(result["variants"]) == {"fp32_torch", "fp32_onnx", "int8_onnx"}
    assert result["ratios"]["fp32_vs_int8_size"] == pytest.approx(
        result["variants"]["fp32_onnx"]["size_mb"] / result["variants"]["int8_onnx"]["size_mb"]
    )
    assert set(result["targets_met"]) == set(result["targets"])
