"""`make headlines`: the README's table of headline figures is generated from metrics/*.json,
and the committed README carries exactly the generated table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emergent.errors import DataError
from emergent.headlines import END, NOT_RUN, STALE, START, generate, main, table
from emergent.tasks import Task, task_from_spec
from tests.conftest import ROOT


def tasks() -> list[Task]:
    """A token task and a text task, defined here so the expected rows do not follow conf/."""
    return [
        task_from_spec(
            {
                "_target_": "emergent.tasks.TokenClassificationTask",
                "name": "tags",
                "headline": {"metric": "f1", "label": "entity F1"},
                "card": {"title": "Tagging"},
            }
        ),
        task_from_spec(
            {
                "_target_": "emergent.tasks.SequenceClassificationTask",
                "name": "mood",
                "headline": {"metric": "accuracy", "label": "accuracy"},
            }
        ),
    ]


def write(folder: Path, name: str, data: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data), encoding="utf-8")


def test_committed_readme_table_is_the_generated_one() -> None:
    current, fresh = generate(ROOT)
    assert current == fresh, STALE


def test_table_rows_from_a_small_metrics_folder(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    write(
        metrics,
        "tags.json",
        {"f1": 0.5125, "f1_ci_low": 0.41, "f1_ci_high": 0.6, "n_examples": 1230},
    )
    write(
        metrics,
        "export_tags.json",
        {
            "int8_onnx": {"metric": 52.0, "size_mb": 21.66, "throughput": 9.0},
            "int8_vs_torch_throughput": 1.7402,
            "int8_drop": -0.854,
            "int8_drop_ci_low": -3.586,
            "int8_drop_ci_high": 1.5505,
        },
    )
    # mood: a headline without an interval; its export ran without the drop's interval
    write(metrics, "mood.json", {"accuracy": 0.8, "precision_macro": 0.7})
    write(metrics, "export_mood.json", {"int8_onnx": {"size_mb": 12.0}, "int8_drop": 0.5})
    write(
        metrics,
        "pretrain.json",
        {"masked_accuracy": 0.26140, "perplexity": 141.9, "global_step": 180},
    )
    write(
        metrics,
        "fewshot.json",
        {
            "big": {
                "zero_shot": {"0": {"mean": 0.6, "std": 0.0, "n_seeds": 1}},
                "head": {"4": {"mean": 0.55, "std": 0.02, "n_seeds": 3}},
                # a tie with zero-shot: the first in file order stays
                "prompt": {"16": {"mean": 0.6, "std": 0.0, "n_seeds": 3}},
            },
            "small": {
                "head": {
                    "4": {"mean": 0.41, "std": 0.05, "n_seeds": 3},
                    "16": {"mean": 0.6667, "std": 0.0312, "n_seeds": 5},
                }
            },
            "empty": {},
        },
    )
    assert table(metrics, tasks(), "mood").splitlines() == [
        START,
        "| what | figure | from |",
        "| --- | --- | --- |",
        "| Tagging (`tags`), test | entity F1 0.512 (95% CI 0.410 to 0.600), 1,230 test examples"
        " | `metrics/tags.json` |",
        "| Tagging, int8 ONNX package | 21.7 MB, 1.74x the batch-32 throughput of fp32 PyTorch,"
        " test drop -0.85 points (95% CI -3.59 to 1.55) | `metrics/export_tags.json` |",
        "| mood (`mood`), test | accuracy 0.800 | `metrics/mood.json` |",
        "| mood, int8 ONNX package | 12.0 MB, test drop 0.50 points | `metrics/export_mood.json` |",
        "| MLM pretraining | masked accuracy 26.1%, perplexity 142, 180 steps"
        " | `metrics/pretrain.json` |",
        "| Few-shot lab (`mood`) | best accuracy: big 0.600 (zero_shot, k=0);"
        " small 0.667 ± 0.031 over 5 seeds (head, k=16) | `metrics/fewshot.json`,"
        " `reports/fewshot/summary.md` |",
        END,
    ]


def test_missing_files_and_keys_say_not_run(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    # the headline key missing, an export without int8 figures, few-shot with no usable run
    write(metrics, "tags.json", {"accuracy": 0.9})
    write(metrics, "export_tags.json", {"fp32_torch": {"size_mb": 86.0}})
    write(metrics, "fewshot.json", {"big": {"zero_shot": {"0": {"std": 0.0}}}, "odd": [1]})
    lines = table(metrics, tasks(), None).splitlines()
    cells = [line.split(" | ")[1] for line in lines[3:-1]]
    assert cells == [NOT_RUN] * 6
    assert lines[-2].startswith("| Few-shot lab | ")
    write(metrics, "pretrain.json", {"skipped": True, "perplexity": 1.0})
    assert "| MLM pretraining | skipped (pretrain.max_steps=0) |" in table(metrics, tasks())


def test_a_corrupt_metrics_file_is_an_error_naming_it(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "tags.json").write_text('{"f1": 0.5,\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"tags\.json:2: not valid JSON"):
        table(metrics, tasks())
    write(metrics, "tags.json", [0.5])
    with pytest.raises(DataError, match=r"tags\.json: expected a JSON object"):
        table(metrics, tasks())


def project(tmp_path: Path, readme: str) -> Path:
    """A project folder with the real params.yaml, one metrics file and `readme`."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    write(tmp_path / "metrics", "sentiment.json", {"accuracy": 0.75, "n_examples": 8})
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    return tmp_path


def test_cli_check_then_write_then_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = project(tmp_path, f"# title\n\n{START}\nold table\n{END}\n\nafter\n")
    assert main(["--check", "--root", str(root)]) == 1
    assert STALE in capsys.readouterr().err
    assert main(["--root", str(root)]) == 0
    text = (root / "README.md").read_text(encoding="utf-8")
    assert text.startswith(f"# title\n\n{START}\n| what | figure | from |\n")
    assert text.endswith(f"{END}\n\nafter\n") and "old table" not in text
    assert "accuracy 0.750, 8 test examples | `metrics/sentiment.json` |" in text
    assert f"| Named-entity recognition (`ner`), test | {NOT_RUN} | `metrics/ner.json` |" in text
    assert main(["--check", "--root", str(root)]) == 0


def test_cli_without_markers_names_the_readme(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = project(tmp_path, f"# title\n{END}\n{START}\n")
    assert main(["--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {root / 'README.md'}: needs one '{START}' line")
    assert (root / "README.md").read_text(encoding="utf-8") == f"# title\n{END}\n{START}\n"
