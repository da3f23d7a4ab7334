"""`make compare`: one row per experiment, task headlines with intervals, the params that differ,
within 160 columns; on `dvc exp show --json` as DVC writes it (a real repository at the end)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from emergent.compare import MAX_WIDTH, render, rows_from_exp_show
from tests.conftest import git_env

TASKS = {
    "ner": {"headline": {"metric": "f1"}},
    "sentiment": {"headline": {"metric": "accuracy"}},
}


def state(rev: str, name: str | None, lr: float, ner: float, sentiment: float | None) -> dict:
    """One `dvc exp show --json` state: params.yaml and the metrics files."""
    metrics = {
        "metrics/ner.json": {
            "data": {"f1": ner, "f1_ci_low": ner - 0.05, "f1_ci_high": ner + 0.05, "n_examples": 30}
        }
    }
    if sentiment is not None:
        metrics["metrics/sentiment.json"] = {"data": {"accuracy": sentiment}}
    params = {"tasks": TASKS, "seed": 13, "finetune": {"shared": {"lr": lr, "max_epochs": 3}}}
    return {
        "rev": rev,
        "name": name,
        "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics},
        "error": None,
        "experiments": None,
    }


def exp_show() -> list[dict]:
    base = state("a" * 40, "main", 1e-4, 0.5, 0.81)
    base["experiments"] = [
        {"revs": [state("b" * 40, "lr-3e-4", 3e-4, 0.625, None)], "name": "lr-3e-4"},
        {"revs": [{"rev": "c" * 40, "name": "queued-one", "data": None, "error": None}]},
    ]
    return [state("workspace", None, 1e-4, 0.5, 0.81), base]


def test_one_row_per_experiment_with_headline_intervals_and_changed_params() -> None:
    lines = render(rows_from_exp_show(exp_show())).splitlines()
    assert lines[0].split() == [
        "experiment",
        "ner",
        "f1",
        "sentiment",
        "accuracy",
        "params",
        "that",
        "differ",
    ]
    assert lines[1].split() == [
        "workspace",
        "0.500",
        "[0.450,",
        "0.550]",
        "0.810",
        "finetune.shared.lr=0.0001",
    ]
    assert lines[2].split() == [
        "main",
        "0.500",
        "[0.450,",
        "0.550]",
        "0.810",
        "finetune.shared.lr=0.0001",
    ]
    # an experiment without a sentiment metrics file shows '-', not a stale figure
    assert lines[3].split() == [
        "└",
        "lr-3e-4",
        "0.625",
        "[0.575,",
        "0.675]",
        "-",
        "finetune.shared.lr=0.0003",
    ]
    assert lines[4].split() == ["└", "queued-one", "-", "-", "queued"]
    assert len(lines) == 5
    # unchanged params (seed, max_epochs, the task definitions) are not shown
    assert "seed" not in "\n".join(lines) and "max_epochs" not in "\n".join(lines)


def test_many_changed_params_stay_within_the_width() -> None:
    entries = exp_show()
    for i, entry in enumerate(entries):
        params = entry["data"]["params"]["params.yaml"]["data"]
        params["model"] = {f"knob_{k}": f"value-{i}-{'x' * 20}" for k in range(12)}
    lines = render(rows_from_exp_show(entries), width=400).splitlines()
    assert max(len(line) for line in lines) == MAX_WIDTH
    assert lines[1].endswith("…") and "model.knob_0=value-0-" in lines[1]
    narrow = render(rows_from_exp_show(entries), width=100).splitlines()
    assert max(len(line) for line in narrow) == 100


@pytest.mark.integration
def test_reads_dvc_exp_show_of_a_real_repository(tmp_path: Path) -> None:
    """Two commits of a tiny DVC project (params + metrics only): the shape DVC really writes."""
    env = git_env()
    (tmp_path / "dvc.yaml").write_text(
        "params:\n  - params.yaml\nmetrics:\n  - metrics/ner.json\n", encoding="utf-8"
    )
    (tmp_path / "metrics").mkdir()

    def commit(lr: float, f1: float, message: str) -> None:
        params = {"tasks": {"ner": TASKS["ner"]}, "finetune": {"shared": {"lr": lr}}}
        (tmp_path / "params.yaml").write_text(json.dumps(params), encoding="utf-8")
        figures = {"f1": f1, "f1_ci_low": f1 - 0.1, "f1_ci_high": f1 + 0.1}
        (tmp_path / "metrics" / "ner.json").write_text(json.dumps(figures), encoding="utf-8")
        subprocess.run(["git", "add", "-A"], cwd=tmp_path, env=env, check=True)
        subprocess.run(["git", "commit", "-qm", message], cwd=tmp_path, env=env, check=True)

    for args in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=tmp_path, env=env, check=True)
    commit(1e-4, 0.5, "base")
    subprocess.run(["git", "checkout", "-qb", "faster"], cwd=tmp_path, env=env, check=True)
    commit(3e-4, 0.6, "faster")
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json", "-a"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    lines = render(rows_from_exp_show(json.loads(shown.stdout))).splitlines()
    by_name = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert by_name == {
        "workspace": ["0.600", "[0.500,", "0.700]", "finetune.shared.lr=0.0003"],
        "faster": ["0.600", "[0.500,", "0.700]", "finetune.shared.lr=0.0003"],
        "main": ["0.500", "[0.400,", "0.600]", "finetune.shared.lr=0.0001"],
    }
