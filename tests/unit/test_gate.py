"""The promotion gate's rule on constructed paired predictions (real Task metrics, a real
bootstrap), and the decision record it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emergent.evaluation.bootstrap import Bootstrap
from emergent.io import write_jsonl
from emergent.registry.gate import (
    ExampleSet,
    GateRule,
    Predictions,
    decide,
    example_sets,
    paired,
)
from emergent.registry.versions import Version
from emergent.tasks import SequenceClassificationTask

SENT = SequenceClassificationTask("sentiment", {"metric": "accuracy", "label": "accuracy"})
LABELS = ["neg", "pos"]
RULE = GateRule(tolerance=1.0, min_feedback_test=30, bootstrap=Bootstrap(2000, 0.95, 0))
CHAMPION = Version("emergent-sentiment", "1", "run-1", {"test_metric": "0.75"})
CANDIDATE = Version(
    "emergent-sentiment", "2", "run-2", {"test_metric": "0.8", "parent_version": "1"}
)


def example_set(name: str, n: int) -> ExampleSet:
    """`n` texts, all labelled `pos` (id 1): a prediction [1] is right, [0] wrong."""
    return ExampleSet(
        name, Path(f"{name}.jsonl"), f"sha-{name}", [{"text": "t", "label": "pos"}] * n
    )


def answers(n: int, right: set[int]) -> Predictions:
    return Predictions(LABELS, [[1] if i in right else [0] for i in range(n)])


def scored(found: ExampleSet, champion_right: set[int], candidate_right: set[int]) -> tuple:
    n = len(found.examples)
    return found, paired(
        SENT,
        found.examples,
        answers(n, champion_right),
        answers(n, candidate_right),
        RULE.bootstrap,
    )


def test_paired_scores_are_the_task_metric_and_a_gain_interval() -> None:
    _, scores = scored(example_set("test", 200), set(range(120)), set(range(160)))
    assert (scores.champion, scores.candidate, scores.gain) == pytest.approx((60.0, 80.0, 20.0))
    # 40 texts fixed, none broken: every resample gains, by 20 points give or take its share
    assert 12.0 < scores.ci_low < 20.0 < scores.ci_high < 28.0


def test_a_clear_improvement_is_promoted() -> None:
    test = scored(example_set("test", 200), set(range(120)), set(range(160)))
    feedback = scored(example_set("feedback_test", 50), set(range(20)), set(range(45)))
    decision = decide(SENT, RULE, CANDIDATE, CHAMPION, [test, feedback])
    assert decision.outcome == "promoted" and decision.promoted
    assert [c.verdict for c in decision.comparisons] == ["pass", "pass"]
    assert decision.reason == "passed on test, feedback_test"


def test_a_drop_beyond_tolerance_with_an_interval_below_zero_is_refused() -> None:
    # the candidate breaks 30 of the champion's 150 right answers: 15 points, surely a loss
    test = scored(example_set("test", 200), set(range(150)), set(range(30, 150)))
    decision = decide(SENT, RULE, CANDIDATE, CHAMPION, [test])
    assert decision.outcome == "refused"
    (comparison,) = decision.comparisons
    assert comparison.scores.gain == pytest.approx(-15.0)
    assert comparison.scores.ci_high < 0.0
    assert "worse by 15.00 points (> promote.tolerance=1.0)" in decision.reason


def test_a_drop_beyond_tolerance_whose_interval_reaches_zero_passes() -> None:
    # 3 broken, 1 fixed on 200: a 1-point loss over a 0.5 tolerance, but a coin toss
    rule = GateRule(tolerance=0.5, min_feedback_test=30, bootstrap=RULE.bootstrap)
    test = scored(example_set("test", 200), set(range(150)), set(range(3, 151)))
    decision = decide(SENT, rule, CANDIDATE, CHAMPION, [test])
    (comparison,) = decision.comparisons
    assert comparison.scores.gain == pytest.approx(-1.0)
    assert comparison.scores.ci_low < 0.0 < comparison.scores.ci_high
    assert decision.outcome == "promoted"
    assert "interval reaches zero" in comparison.reason


def test_a_small_feedback_split_does_not_decide() -> None:
    test = scored(example_set("test", 200), set(range(150)), set(range(150)))
    # 10 feedback examples, the candidate worse on all of them: reported, skipped
    feedback = scored(example_set("feedback_test", 10), set(range(10)), set())
    decision = decide(SENT, RULE, CANDIDATE, CHAMPION, [test, feedback])
    assert [c.verdict for c in decision.comparisons] == ["pass", "skip"]
    assert decision.comparisons[1].scores.gain == pytest.approx(-100.0)
    assert "10 examples < promote.min_feedback_test=30" in decision.comparisons[1].reason
    assert decision.outcome == "promoted"


def test_a_feedback_split_without_a_significant_gain_is_refused() -> None:
    test = scored(example_set("test", 200), set(range(150)), set(range(150)))
    # 40 feedback examples, 2 more right: a 5-point gain whose interval reaches zero
    feedback = scored(example_set("feedback_test", 40), set(range(20)), set(range(22)))
    decision = decide(SENT, RULE, CANDIDATE, CHAMPION, [test, feedback])
    assert decision.comparisons[1].scores.gain == pytest.approx(5.0)
    assert decision.comparisons[1].scores.ci_low <= 0.0
    assert decision.outcome == "refused"
    assert decision.reason == "feedback_test: no gain with an interval above zero"


def test_first_promotion_and_the_champion_itself() -> None:
    first = decide(SENT, RULE, CANDIDATE, None, [])
    assert (first.outcome, first.comparisons) == ("promoted", [])
    again = decide(SENT, RULE, CANDIDATE, CANDIDATE, [])
    assert again.outcome == "unchanged" and not again.promoted


def test_the_decision_file_holds_versions_hashes_and_intervals(tmp_path: Path) -> None:
    test = scored(example_set("test", 200), set(range(150)), set(range(30, 150)))
    decision = decide(SENT, RULE, CANDIDATE, CHAMPION, [test])
    path = decision.save(tmp_path / "reports" / "loop")
    assert path.parent == tmp_path / "reports" / "loop" and path.suffix == ".json"
    record = json.loads(path.read_text())
    assert record["outcome"] == "refused" and record["promoted"] is False
    assert record["candidate"]["version"] == "2" and record["champion"]["version"] == "1"
    assert record["candidate"]["parent_version"] == "1"
    assert record["candidate"]["test_metric"] == pytest.approx(0.8)
    (found,) = record["example_sets"]
    assert found["sha256"] == "sha-test" and found["examples"] == 200
    assert found["gain"] == pytest.approx(-15.0) and found["ci_high"] < 0.0
    assert record["rule"] == {
        "tolerance": 1.0,
        "min_feedback_test": 30,
        "resamples": 2000,
        "confidence": 0.95,
        "seed": 0,
    }
    assert path.name == decision.time.replace(":", "-") + ".json"
    again = decide(SENT, RULE, CANDIDATE, CHAMPION, [test])
    assert again.save(tmp_path / "reports" / "loop") != path  # a later decision, another file
    assert decision.lines()[-1].startswith(
        "refused: emergent-sentiment candidate v2 vs champion v1"
    )


def test_example_sets_read_the_feedback_split_when_ingest_made_one(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "sentiment" / "test.jsonl", [{"text": "a", "label": "pos"}])
    assert [s.name for s in example_sets(tmp_path, "sentiment")] == ["test"]
    write_jsonl(tmp_path / "sentiment" / "feedback_test.jsonl", [{"text": "b", "label": "neg"}] * 3)
    sets = example_sets(tmp_path, "sentiment")
    assert [(s.name, len(s.examples)) for s in sets] == [("test", 1), ("feedback_test", 3)]
    assert len(sets[1].sha256) == 64


def test_lineage_names_the_champion_and_the_feedback_seen(tmp_path: Path) -> None:
    """A real MLflow sqlite store (tests/conftest.py points MLFLOW_TRACKING_URI at one)."""
    import mlflow

    from emergent.data.layout import feedback_seen
    from emergent.registry.versions import alias_version, lineage, set_champion

    client = mlflow.MlflowClient()
    client.create_registered_model("emergent-sentiment")
    version = client.create_model_version("emergent-sentiment", str(tmp_path)).version
    assert alias_version("sentiment", "champion") is None
    assert lineage("sentiment", None).tags() == {
        "parent_version": "none",
        "feedback_sha256": "none",
        "feedback_examples": "none",
    }
    set_champion("sentiment", str(version))
    champion = alias_version("sentiment", "champion")
    assert champion is not None and champion.version == str(version)
    manifest = tmp_path / "manifest.json"
    entry = {"sha256": "ab" * 32, "train": 12, "test": 40}
    manifest.write_text(json.dumps({"tasks": {"sentiment": {"feedback": entry}, "ner": {}}}))
    assert feedback_seen(manifest, "ner") is None
    assert lineage("sentiment", feedback_seen(manifest, "sentiment")).tags() == {
        "parent_version": str(version),
        "feedback_sha256": "ab" * 32,
        "feedback_examples": "12",
    }
