"""An export package's `export.json` through `ExportInfo`: a package the export stage already
shipped loads and saves to the same bytes, its headline figures are the metrics file's keys,
and a bad file is one line naming the file and the field (never a KeyError)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emergent.errors import StageError
from emergent.export.pipeline import headline_figures
from emergent.serving.package import EXPORT_FILE, ExportInfo, Variant
from emergent.serving.predictor import load_package
from tests.conftest import ROOT

# export.json and labels.json of the sentiment package the export stage shipped (before the
# class existed): the format every older package on disk and in the registry has.
FIXTURE = ROOT / "tests" / "fixtures" / "export" / "sentiment"
# The keys of metrics/export_<task>.json, which DVC tracks and the headlines read.
METRICS_KEYS = [
    "fp32_torch",
    "fp32_onnx",
    "int8_onnx",
    "int8_vs_torch_throughput",
    "int8_drop",
    "int8_drop_ci_low",
    "int8_drop_ci_high",
    "int8_val_drop",
    "int8_val_drop_ci_low",
    "int8_val_drop_ci_high",
]
# Packages a `dvc repro` left in this checkout (none in a fresh clone).


def test_a_shipped_package_loads_and_saves_the_same_bytes(tmp_path: Path) -> None:
    info = ExportInfo.load(FIXTURE)
    assert info.task == "sentiment" and info.max_length == 64 and info.pad_token_id == 0
    assert info.parity.drop_gate == "significant" and info.parity.threads == 2
    assert info.parity.int8_drop_ci == [-0.7843137254901933, 1.6490196078431363]
    assert info.variants[Variant.INT8_ONNX]["metric"] == 82.27450980392157
    assert info.pruning is not None and info.pruning["fused_ops"]["Attention"] == 6
    saved = info.save(tmp_path)
    written = (FIXTURE / EXPORT_FILE).read_text(encoding="utf-8")
    assert json.loads(saved.read_text(encoding="utf-8")) == json.loads(written)
    assert saved.read_text(encoding="utf-8") == written


def test_headline_figures_keep_the_metrics_file_keys_and_the_package_values() -> None:
    figures = headline_figures(ExportInfo.load(FIXTURE))
    assert list(figures) == METRICS_KEYS
    assert figures["int8_onnx"] == {
        "metric": 82.27450980392157,
        "size_mb": 12.73799991607666,
        "latency_ms_p50": 2.899958999478258,
        "throughput": 437.9250541809227,
    }
    assert figures["int8_vs_torch_throughput"] == 4.340682714958172
    assert (figures["int8_val_drop_ci_low"], figures["int8_val_drop_ci_high"]) == (
        -1.17647058823529,
        1.8039215686274535,
    )


def _without(section: str | None, key: str) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        del (raw[section] if section else raw)[key]

    return edit


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw[key] = value

    return edit


def _set_parity(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["parity"][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_without(None, "max_length"), r"field max_length: Field required"),
        (_without("parity", "atol"), r"field parity\.atol: Field required"),
        (_without("variants", "int8_onnx"), r"field variants\.int8_onnx: Field required"),
        (_set("max_length", "128"), r"field max_length: Input should be a valid integer"),
        (_set("per_channel", 1), r"field per_channel: Input should be a valid boolean"),
        (_set_parity("int8_drop_ci", None), r"field parity\.int8_drop_ci: Input should be a"),
        (_set("task_spec", []), r"field task_spec: Input should be an object"),
        (_set("quantized", True), r"field quantized: Unexpected keyword argument"),
    ],
    ids=["missing", "missing-nested", "missing-variant", "str", "int", "null", "list", "unknown"],
)
def test_a_bad_export_json_is_one_line_naming_file_and_field(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    raw = json.loads((tmp_path / EXPORT_FILE).read_text(encoding="utf-8"))
    edit(raw)
    (tmp_path / EXPORT_FILE).write_text(json.dumps(raw), encoding="utf-8")
    for load in (ExportInfo.load, load_package):  # the service's loader says the same
        with pytest.raises(StageError, match=message) as err:
            load(tmp_path)
        assert str(err.value).startswith(f"{tmp_path / EXPORT_FILE}: ")
        assert "\n" not in str(err.value)


def test_an_export_json_that_is_not_json_or_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"is not an export package: run export@<task> first"):
        ExportInfo.load(tmp_path)
    (tmp_path / EXPORT_FILE).write_text('{"task": "ner",', encoding="utf-8")
    with pytest.raises(StageError, match=r"export\.json: not valid JSON \(.*, line 1\)") as err:
        load_package(tmp_path)
    assert "\n" not in str(err.value)
