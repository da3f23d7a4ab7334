"""The fewshot stage end to end on the smoke model: metrics shape, plots, report, MLflow runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from emergent.config import Paths
from emergent.fewshot.causal_lab import CAUSAL_METHODS
from emergent.stages import StageError, run_stage
from tests.conftest import smoke_cfg

# Runs the few-shot stage on the session's pretrained smoke model.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

METHODS = {"zero_shot", "zero_shot_calibrated", "in_context", "head", "prompt"}


def test_fewshot_stage_outputs(smoke_pretrained: Path, tmp_path: Path) -> None:
    cfg = smoke_cfg(tmp=tmp_path)
    run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    metrics = json.loads((tmp_path / "metrics/fewshot.json").read_text())
    assert set(metrics) == {cfg.model.name}
    table = metrics[cfg.model.name]
    assert set(table) == METHODS
    assert set(table["zero_shot"]) == {"0"} and set(table["prompt"]) == {"4"}
    rows = (tmp_path / "reports/fewshot/results.csv").read_text().splitlines()
    assert rows[0].startswith("model,method,k,seed,accuracy") and len(rows) == 1 + 5
    assert "brier" in rows[0] and "ece" in rows[0] and "gold_word_logprob" in rows[0]
    # Each cell is its one run (one seed): the run's accuracy, no spread. An accuracy is a
    # count of right answers over the test subset: a multiple of 1/n.
    test_texts = (smoke_pretrained / "data/prepared/sentiment/test.jsonl").read_text()
    n = min(int(cfg.fewshot.test_size), len(test_texts.splitlines()))
    runs = list(csv.DictReader(rows))
    assert sorted(r["method"] for r in runs) == sorted(METHODS)
    for run in runs:
        accuracy = float(run["accuracy"])
        assert accuracy * n == pytest.approx(round(accuracy * n), abs=1e-6), (run, n)
        assert table[run["method"]][run["k"]] == {
            "mean": round(accuracy, 4),
            "std": 0.0,
            "n_seeds": 1,
        }
    summary = (tmp_path / "reports/fewshot/summary.md").read_text()
    assert "| prompt |" in summary and "Data advantage" in summary and "92.7" in summary
    k_prompt = (tmp_path / "plots/fewshot/k_prompt.csv").read_text().splitlines()
    assert k_prompt[0] == "k,accuracy,low,high,model" and k_prompt[1].startswith("4,")
    assert (tmp_path / "plots/fewshot/accuracy_vs_k.png").stat().st_size > 1000

    import mlflow

    runs = mlflow.search_runs(experiment_names=["fewshot"])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    nested = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parent) == 1 and len(nested) == 5
    assert set(nested["tags.method"]) == METHODS
    assert (nested["tags.dvc_stage"] == "fewshot").all()
    assert (nested["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    # the lab follows the trainer's precision (smoke: 32-true) and logs what it ran with
    assert parent["params.precision_resolved"].iloc[0] == "32-true"


def test_fewshot_rejects_a_multi_token_verbalizer(smoke_pretrained: Path, tmp_path: Path) -> None:
    cfg = smoke_cfg("fewshot.prompts.sentiment.verbalizer.positive=marvellous", tmp=tmp_path)
    with pytest.raises(StageError, match=r"fewshot\.prompts\.sentiment\.verbalizer\.positive"):
        run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    assert not (tmp_path / "metrics/fewshot.json").exists()


def _with_causal(cfg, tiny: Path, methods: list[str]) -> None:
    from omegaconf import OmegaConf

    cfg.fewshot.models = OmegaConf.create(
        [
            {"name": "smoke", "path": "models/pretrained", "methods": ["head"]},
            {
                "name": "tiny-llama",
                "preset": "smollm2_135m_instruct",
                "source": str(tiny),
                "methods": methods,
            },
        ]
    )
    cfg.fewshot.compare = OmegaConf.create(
        [
            {"a": "tiny-llama/prompt/4", "b": "smoke/head/4"},
            {"a": "tiny-llama/prompt/4", "b": "tiny-llama/zero_shot/0"},
        ]
    )


def test_fewshot_stage_runs_a_causal_lm_beside_the_masked_one(
    smoke_pretrained: Path, tmp_path: Path
) -> None:
    """A causal preset with another source (a tiny Llama) runs its methods beside the smoke
    MLM's head; the paired comparisons and the scale table cover both."""
    from tests.helpers import tiny_causal_lm

    cfg = smoke_cfg(tmp=tmp_path)
    causal = list(CAUSAL_METHODS)  # every method a causal LM runs
    _with_causal(cfg, tiny_causal_lm(tmp_path / "tiny"), causal)
    cfg.fewshot.causal.train.steps = 4
    cfg.fewshot.causal.self_training = {"unlabelled": 16, "per_class": 2, "steps": 2}
    run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    metrics = json.loads((tmp_path / "metrics/fewshot.json").read_text())
    assert set(metrics) == {"smoke", "tiny-llama"}
    assert set(metrics["smoke"]) == {"head"}
    assert set(metrics["tiny-llama"]) == set(causal)
    assert set(metrics["tiny-llama"]["in_context_calibrated"]) == {"4"}
    rows = list(csv.DictReader((tmp_path / "reports/fewshot/results.csv").open()))
    again = [r for r in rows if r["method"] == "prompt_self_training"]
    assert len(again) == len(cfg.fewshot.seeds)  # k=4 per seed, after its own prompt run
    assert {r["pseudo_labelled"] for r in again} <= {"2", "3", "4"}  # up to 2 per label
    details = json.loads((tmp_path / "reports/fewshot/details.json").read_text())
    assert details["models"]["tiny-llama"]["family"] == "causal"
    assert details["models"]["tiny-llama"]["params"] > 0
    test_texts = (smoke_pretrained / "data/prepared/sentiment/test.jsonl").read_text()
    n = min(int(cfg.fewshot.test_size), len(test_texts.splitlines()))
    compared = {(c["a"], c["b"]): c for c in details["comparisons"]}
    assert set(compared) == {
        ("tiny-llama/prompt/4", "smoke/head/4"),
        ("tiny-llama/prompt/4", "tiny-llama/zero_shot/0"),
    }
    for c in compared.values():
        assert c["n_texts"] == n
        assert c["ci_low"] <= c["difference"] <= c["ci_high"]
    results = (tmp_path / "reports/fewshot/results.csv").read_text()
    assert "correct" not in results.splitlines()[0]  # per-text lists stay out of the CSV
    summary = (tmp_path / "reports/fewshot/summary.md").read_text()
    assert "## Paired comparisons" in summary and "## Across scale" in summary
    assert "| causal self-training | 16 unlabelled training texts labelled, the 2 surest" in summary
    scale = (tmp_path / "plots/fewshot/scale.csv").read_text().splitlines()
    assert scale[0].startswith("model,family,params,training_tokens")
    assert any(line.startswith("tiny-llama,causal,") for line in scale)
    assert (tmp_path / "plots/fewshot/accuracy_vs_size.png").stat().st_size > 1000


def test_fewshot_refuses_a_method_the_model_family_cannot_run(
    smoke_pretrained: Path, tmp_path: Path
) -> None:
    from tests.helpers import tiny_causal_lm

    cfg = smoke_cfg(tmp=tmp_path)
    _with_causal(cfg, tiny_causal_lm(tmp_path / "tiny"), ["zero_shot", "head"])
    with pytest.raises(StageError, match=r"^fewshot\.models\[1\]\.methods: \['head'\] cannot run"):
        run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    cfg.fewshot.models[1].methods = ["zero_shot"]
    cfg.fewshot.models[0].methods = ["prompt_self_training"]
    with pytest.raises(
        StageError, match=r"^fewshot\.models\[0\]\.methods: \['prompt_self_training'\] cannot"
    ):
        run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    cfg.fewshot.models[0].methods = ["head"]
    cfg.fewshot.causal_prompts.sentiment.template = "{text} It was {mask}."
    with pytest.raises(StageError, match=r"causal_prompts\.sentiment\.template=.*must end"):
        run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    cfg.fewshot.models[1].source = str(tmp_path / "missing.gguf")
    with pytest.raises(StageError, match=r"^fewshot\.models\[1\]\.preset=.*does not exist"):
        run_stage("fewshot", cfg, Paths(smoke_pretrained, tmp_path))
    assert not (tmp_path / "metrics/fewshot.json").exists()


CLEAR_REVIEWS = [
    ("A wonderful, moving film; I loved every minute of it.", "positive"),
    ("Brilliant acting and a beautiful story. A joy to watch.", "positive"),
    ("One of the best movies of the year, funny and smart.", "positive"),
    ("A delightful, charming comedy that the whole family will enjoy.", "positive"),
    ("Terrible. A boring, stupid mess that wasted two hours of my life.", "negative"),
    ("The worst film I have seen in years: dull, ugly and badly acted.", "negative"),
    ("An awful, tedious movie with a plot that makes no sense.", "negative"),
    ("Painfully bad, lazy and completely unfunny.", "negative"),
]


@pytest.mark.slow
def test_the_instruct_lm_from_its_package_reads_sentiment_zero_shot() -> None:
    """The shipped GGUF model, loaded through the preset's source, tells clearly positive from
    clearly negative reviews with no example (the ability the lab measures at scale)."""
    from emergent.config import compose
    from emergent.fewshot.causal_lab import build_causal_lab
    from emergent.fewshot.protocol import FewShotData
    from emergent.schema import validate_config

    settings = validate_config(compose(["model=smollm2_135m_instruct"]))
    texts = [{"text": t, "label": label} for t, label in CLEAR_REVIEWS]
    data = FewShotData(["negative", "positive"], texts, texts, texts)
    lab = build_causal_lab(settings.model, settings.fewshot, data, None, "model.source")
    out = lab.zero_shot(lab.load())["zero_shot"]
    assert lab.parameters == 134_515_008
    assert sum(out["correct"]) >= 7, out["correct"]
