"""One comparison that decides a promotion: champion and candidate on the same examples.

Both registered versions are scored with the runtime the service uses (their int8 ONNX
packages through ONNX Runtime, the package's own tokenizer and task definition), on the task's
test split and, separately, on the feedback test split ingest prepared
(`<prepared>/<task>/feedback_test.jsonl`, when the task has feedback). Per example set the
gate reports both headline figures and a paired bootstrap interval of the difference
(candidate - champion, in points, positive = better in the headline's direction; both models'
counts of the same resampled examples, `emergent.evaluation.bootstrap`).

The rule (`promote.` in config, `GateRule`):
- original test: refuse when the candidate is worse by more than `tolerance` points AND the
  interval of the difference lies wholly below zero. This is the export gate's `significant`
  reading of a drop (`export.drop_gate`): a point estimate beyond the tolerance whose interval
  reaches zero is noise and does not refuse; a significant loss within the tolerance does not
  refuse either (the tolerance is what the project accepts to lose for the feedback gain).
- feedback test: once it holds at least `min_feedback_test` examples, the candidate must be
  better on it with an interval that excludes zero (`ci_low > 0`); a smaller split is scored
  and reported but does not decide (a handful of examples cannot show a gain).
- no champion yet: the candidate is promoted (first promotion), nothing is scored.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emergent.data.layout import FEEDBACK_TEST, split_path
from emergent.errors import StageError
from emergent.evaluation.bootstrap import Bootstrap, interval
from emergent.io import read_jsonl, sha256_file, write_json
from emergent.registry.versions import Version
from emergent.schema import Settings
from emergent.tasks import Task

log = logging.getLogger(__name__)

Verdict = Literal["pass", "refuse", "skip"]
Outcome = Literal["promoted", "refused", "unchanged"]
TEST = "test"


@dataclass(frozen=True)
class GateRule:
    """`promote.` in config: how much the original test may lose, when the feedback split
    counts, and the bootstrap that gives each difference its interval."""

    tolerance: float = 1.0  # points of the headline metric
    min_feedback_test: int = 30
    bootstrap: Bootstrap = field(default_factory=Bootstrap)

    @classmethod
    def from_settings(cls, settings: Settings) -> GateRule:
        """From the validated config: `promote` and the run's `seed`."""
        section = settings.promote
        bootstrap = Bootstrap(section.resamples, section.confidence, settings.seed)
        return cls(section.tolerance, section.min_feedback_test, bootstrap)

    def to_json(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "min_feedback_test": self.min_feedback_test,
            **asdict(self.bootstrap),
        }


@dataclass(frozen=True)
class ExampleSet:
    """Labelled examples both versions are scored on, with the file's identity."""

    name: str  # "test" or "feedback_test"
    path: Path
    sha256: str
    examples: list[dict]

    @classmethod
    def load(cls, name: str, path: Path) -> ExampleSet:
        return cls(name, path, sha256_file(path), read_jsonl(path))


def example_sets(prepared: Path, task: str) -> list[ExampleSet]:
    """The task's test split, and its feedback test split when ingest prepared one."""
    test = split_path(prepared, task, TEST)
    if not test.is_file():
        raise StageError(f"{test} not found: run the ingest stage first (dvc repro ingest)")
    sets = [ExampleSet.load(TEST, test)]
    feedback = split_path(prepared, task, FEEDBACK_TEST)
    if feedback.is_file():
        sets.append(ExampleSet.load(FEEDBACK_TEST, feedback))
    return sets


@dataclass(frozen=True)
class Predictions:
    """One version's predicted label ids per example, with the label set they index."""

    labels: list[str]
    pred: list[list[int]]


@dataclass(frozen=True)
class Paired:
    """Both versions' headline on one example set (points) and the paired interval of the
    candidate's gain over the champion (points, positive = better)."""

    examples: int
    champion: float
    candidate: float
    gain: float
    ci_low: float
    ci_high: float


def paired(
    task: Task,
    examples: list[dict],
    champion: Predictions,
    candidate: Predictions,
    settings: Bootstrap,
) -> Paired:
    """Score both versions' predictions of the same examples; each keeps its own label set
    (a retrained model may know a label more), the resamples are shared."""
    counts = [
        task.outcome_counts(examples, p.labels, p.pred).astype(np.float64)
        for p in (champion, candidate)
    ]
    champ, cand = (100.0 * float(task.headline_from_counts(c.sum(0))) for c in counts)

    def gain(champ_totals: np.ndarray, cand_totals: np.ndarray) -> np.ndarray:
        return -100.0 * task.headline.drop(
            task.headline_from_counts(champ_totals), task.headline_from_counts(cand_totals)
        )

    low, high = interval(gain, counts, settings)
    return Paired(len(examples), champ, cand, -task.headline.drop(champ, cand), low, high)


@dataclass(frozen=True)
class Comparison:
    """What the gate found on one example set and what it made of it."""

    name: str
    path: str
    sha256: str
    scores: Paired
    verdict: Verdict
    reason: str

    def line(self, label: str) -> str:
        s = self.scores
        return (
            f"{self.name:<14} n={s.examples:<5} {label}: champion {s.champion:.2f}, "
            f"candidate {s.candidate:.2f}, gain {s.gain:+.2f} [{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
            f" -> {self.verdict}: {self.reason}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            **asdict(self.scores),
            "verdict": self.verdict,
            "reason": self.reason,
        }


def judge(rule: GateRule, name: str, scores: Paired) -> tuple[Verdict, str]:
    """The rule on one example set (see the module docstring)."""
    if name == TEST:
        loss = -scores.gain
        if loss > rule.tolerance and scores.ci_high < 0.0:
            return "refuse", (
                f"worse by {loss:.2f} points (> promote.tolerance={rule.tolerance}) and the "
                "interval excludes zero"
            )
        if loss > rule.tolerance:
            return "pass", f"worse by {loss:.2f} points, but the interval reaches zero (noise)"
        return "pass", f"within promote.tolerance={rule.tolerance} points"
    if scores.examples < rule.min_feedback_test:
        return "skip", (
            f"{scores.examples} examples < promote.min_feedback_test={rule.min_feedback_test}"
        )
    if scores.ci_low > 0.0:
        return "pass", "better, with an interval above zero"
    return "refuse", "no gain with an interval above zero"


@dataclass
class Decision:
    """The gate's decision on `candidate` against `champion`: what `promote` acts on and what
    lands in MLflow (experiment `loop`) and `reports/loop/<UTC time>.json`."""

    task: str
    metric: str  # the headline's label
    candidate: Version
    champion: Version | None
    comparisons: list[Comparison]
    outcome: Outcome
    reason: str
    rule: GateRule
    time: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "task": self.task,
            "metric": self.metric,
            "outcome": self.outcome,
            "promoted": self.promoted,
            "reason": self.reason,
            "candidate": self.candidate.to_json(),
            "champion": self.champion.to_json() if self.champion else None,
            "example_sets": [c.to_json() for c in self.comparisons],
            "rule": self.rule.to_json(),
        }

    def save(self, folder: Path) -> Path:
        """Write the decision atomically as `<folder>/<its UTC time>.json` (microseconds in
        the name: two decisions in one second keep both files)."""
        path = Path(folder) / f"{self.time.replace(':', '-')}.json"
        write_json(path, self.to_json())
        return path

    def lines(self) -> list[str]:
        """One readable line per example set, then the decision."""
        champion = self.champion.version if self.champion else "none"
        return [
            *(c.line(self.metric) for c in self.comparisons),
            f"{self.outcome}: {self.candidate.name} candidate v{self.candidate.version} vs "
            f"champion v{champion}: {self.reason}",
        ]

    def metrics(self) -> dict[str, float]:
        """Numeric figures for MLflow: per example set both scores, the gain and its interval."""
        return {
            f"{c.name}.{key}": float(value)
            for c in self.comparisons
            for key, value in asdict(c.scores).items()
        }


def decide(
    task: Task,
    rule: GateRule,
    candidate: Version,
    champion: Version | None,
    scored: list[tuple[ExampleSet, Paired]],
) -> Decision:
    """Apply the rule to every scored example set; refused when any set refuses."""
    label = task.headline.label
    if champion is None:
        return Decision(
            task.name, label, candidate, None, [], "promoted", "first promotion (no champion)", rule
        )
    if champion.version == candidate.version:
        return Decision(
            task.name, label, candidate, champion, [], "unchanged", "already the champion", rule
        )
    comparisons = []
    for found, scores in scored:
        verdict, reason = judge(rule, found.name, scores)
        comparisons.append(
            Comparison(found.name, str(found.path), found.sha256, scores, verdict, reason)
        )
    refused = [c for c in comparisons if c.verdict == "refuse"]
    if refused:
        reason = "; ".join(f"{c.name}: {c.reason}" for c in refused)
        return Decision(task.name, label, candidate, champion, comparisons, "refused", reason, rule)
    counted = [c.name for c in comparisons if c.verdict == "pass"]
    reason = "passed on " + ", ".join(counted)
    return Decision(task.name, label, candidate, champion, comparisons, "promoted", reason, rule)


def package_predictions(export_dir: Path, examples: list[dict]) -> Predictions:
    """What an exported package predicts for labelled examples, as the service runs it: its
    int8 ONNX model in ONNX Runtime, its tokenizer and its task definition (CRF scores,
    decoding), batched like the export's own int8 figures (the registry's `test_metric`)."""
    from transformers import AutoTokenizer

    from emergent.evaluation.predict import predict
    from emergent.serving.package import MODEL_FILE
    from emergent.serving.predictor import load_package
    from emergent.serving.runtime import ort_forward, session

    meta, labels, package_task = load_package(export_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(export_dir))
    forward = ort_forward(session(Path(export_dir) / MODEL_FILE))
    pred, _ = predict(package_task, forward, tokenizer, examples, labels, meta.max_length)
    return Predictions(list(labels), [list(p) for p in pred])


def run_gate(
    task: Task,
    rule: GateRule,
    candidate: Version,
    champion: Version | None,
    sets: list[ExampleSet],
    download_root: Path,
) -> Decision:
    """Download both versions' packages, score them on every example set, decide."""
    from emergent.serving.slots import ModelLoadError, download_version

    scored: list[tuple[ExampleSet, Paired]] = []
    if champion is not None and champion.version != candidate.version:
        try:
            dirs = {
                v.version: download_version(task.name, v.version, download_root).export_dir
                for v in (champion, candidate)
            }
        except ModelLoadError as err:
            raise StageError(str(err)) from err
        for found in sets:
            if not found.examples:
                log.warning("%s holds no examples: not scored", found.path)
                continue
            champ, cand = (
                package_predictions(dirs[v.version], found.examples) for v in (champion, candidate)
            )
            scored.append((found, paired(task, found.examples, champ, cand, rule.bootstrap)))
    return decide(task, rule, candidate, champion, scored)
