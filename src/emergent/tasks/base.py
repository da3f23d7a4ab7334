"""The Task interface: everything that differs between kinds of supervised task.

Stages, evaluation, export, serving and the few-shot lab never test a task's name; they ask
the task object. A task is built from `conf/tasks/<name>.yaml` (`_target_` names its kind) and
owns its labels, batched encoding, collator, model class and LoRA task type, decoding, metrics,
its ONE headline metric, example-to-text, error-report rows and per-class plot rows.

Encoded rows are plain dicts. Keys the model takes (`input_ids`, `attention_mask`, `labels`)
are padded by the collator; `example` (index of the source example) and `row` (index of the
row) travel as integers; keys starting with `_` are bookkeeping that never reaches a tensor.
A long example may become several rows (overlapping windows); `assemble` puts the row
predictions back together per example, so every word of every example is scored.

Nothing here imports torch at module level: serving uses tasks through ONNX Runtime only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from emergent.errors import ExampleError
from emergent.tasks.shapes import INPUT as SHAPES_INPUT  # token tasks' word-shape batch key

if TYPE_CHECKING:
    from emergent.schema import TaskDataConfig

Example = dict[str, Any]
Row = dict[str, Any]
# Per row: (word index within the example, predicted label id, confidence or probabilities).
RowOutput = list[tuple[int, int, Any]]
MODEL_KEYS = ("input_ids", "attention_mask", "labels")
#: a metric value, or an array of them (one per bootstrap resample)
Score = TypeVar("Score", float, np.ndarray)


@dataclass(frozen=True)
class Headline:
    """The one number a task is judged by: early stopping, best weights, the export parity gate,
    the registry's test metric, promotion, the model card and the README all use it."""

    metric: str
    label: str
    mode: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in {"max", "min"}:
            raise ValueError(f"headline.mode must be 'max' or 'min', got {self.mode!r}")

    def value(self, metrics: Mapping[str, Any]) -> float:
        return float(metrics[self.metric])

    def points(self, metrics: Mapping[str, Any]) -> float:
        """The headline in points (x100), as gates and model cards quote it."""
        return 100.0 * self.value(metrics)

    def drop(self, reference: Score, candidate: Score) -> Score:
        """How much worse `candidate` is than `reference` (positive = worse); elementwise on
        arrays (the bootstrap scores every resample at once)."""
        return reference - candidate if self.mode == "max" else candidate - reference

    def improved(self, candidate: float, incumbent: float | None) -> bool:
        if incumbent is None or np.isnan(incumbent):
            return True
        return candidate > incumbent if self.mode == "max" else candidate < incumbent


@dataclass
class Evaluation:
    """What a task reports about predictions on labelled examples."""

    metrics: dict[str, float]  # headline figures (metrics/<task>.json, MLflow)
    per_class: dict[str, dict[str, float]]  # class/type -> precision, recall, f1, support
    confusion: dict[str, Any]  # {"labels": [...], "matrix": [[...]]}


@dataclass(frozen=True)
class Card:
    """Human text for model cards and reports."""

    title: str = ""
    data: str = ""
    licence: str = "see the data source"
    limits: str = ""


class Task(ABC):
    """A supervised task over prepared examples (see the module docstring)."""

    kind: ClassVar[str]  # human-readable kind, for logs and cards
    example_fields: ClassVar[tuple[str, ...]]  # fields every prepared example has
    #: metrics besides the headline that also get a bootstrap interval (`scores_from_counts`)
    interval_metrics: ClassVar[tuple[str, ...]] = ()
    #: labels form a chain per example, so a CRF layer can learn transition scores
    #: (`finetune.<task>.crf`, emergent.models.crf)
    learns_transitions: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        headline: Mapping[str, Any],
        card: Mapping[str, Any] | None = None,
        errors_kept: int = 50,
    ) -> None:
        self.name = name
        self.headline = Headline(**dict(headline))
        self.card = Card(**dict(card or {}))
        self.errors_kept = int(errors_kept)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def for_model(self, config: Any) -> Task:
        """This task as the trained model with `config` (a transformers config) decodes: what
        that model learned besides its weights (token tasks: CRF transition scores). Evaluation
        and export call it on loading a model; the base task decodes every model alike."""
        return self

    def model_spec(self) -> dict[str, Any]:
        """What `for_model` bound, as task-definition entries: an export package's task
        definition carries them, so the server decodes as evaluation did."""
        return {}

    # --- data ------------------------------------------------------------------------------
    @abstractmethod
    def read(
        self, path: Path, fmt: str, data_cfg: TaskDataConfig, source: str
    ) -> tuple[list[Example], int]:
        """Examples from one configured file, and the number of rows skipped by label."""

    @abstractmethod
    def detect_format(self, path: Path, configured: str) -> str:
        """The file format from config or suffix."""

    @abstractmethod
    def normalize(self, example: Example, normalize_text: Callable[[str], str]) -> Example | None:
        """The example with normalised text, or None when nothing is left of it."""

    @abstractmethod
    def text(self, example: Example) -> str:
        """The example's input as one text (corpus building, leak checks, benchmarks)."""

    def key(self, example: Example) -> Hashable:
        """What makes two examples 'the same' (de-duplication, leak removal)."""
        return self.text(example)

    def stratify(self, example: Example) -> Hashable | None:
        """The value splits are stratified by (None: no stratification)."""
        return None

    def check_labelled(
        self, example: Mapping[str, Any], labels: Sequence[str], max_chars: int
    ) -> Example:
        """A labelled example from outside the pipeline (the service's feedback), checked by
        this task's rules against a model's `labels`, with `max_chars` characters of text at
        most (the predict limit). Returns the example's task fields, unchanged (it is kept as
        sent); raises ExampleError naming the first bad field."""
        fields = self.example_fields
        for name in example:
            if name not in fields:
                raise ExampleError(
                    name, f"not a field of a {self.kind} example ({', '.join(fields)})"
                )
        for name in fields:
            if example.get(name) is None:
                raise ExampleError(name, "is missing")
        checked = {name: example[name] for name in fields}
        self.check_fields(checked, labels, max_chars)
        return checked

    @abstractmethod
    def check_fields(self, example: Example, labels: Sequence[str], max_chars: int) -> None:
        """The kind's own rules over an example holding every field (see `check_labelled`)."""

    @abstractmethod
    def label_counts(self, examples: Sequence[Example]) -> dict[str, int]:
        """Label (or tag) frequencies, for the manifest and quality checks."""

    @abstractmethod
    def labels(self, examples: Sequence[Example]) -> list[str]:
        """The label set a model is trained with, from the training examples."""

    @abstractmethod
    def quality_checks(
        self, splits: Mapping[str, list[Example]], data_cfg: TaskDataConfig
    ) -> list[Any]:
        """Great Expectations checks of the prepared splits (see `emergent.tasks.checks`)."""

    # --- model -----------------------------------------------------------------------------
    @abstractmethod
    def model_class(self) -> Any:
        """The transformers `AutoModelFor...` class of this task."""

    lora_task_type: ClassVar[str]  # peft TaskType name

    # --- encoding --------------------------------------------------------------------------
    @abstractmethod
    def encode(
        self,
        tokenizer: Any,
        examples: Sequence[Example],
        labels: Sequence[str],
        max_length: int,
        *,
        unknown_labels: str = "error",
        label_all_tokens: bool = False,
    ) -> list[Row]:
        """Tokenize all examples in one batched call. `unknown_labels`: 'error' (training) or
        'ignore' (scoring a file whose gold labels the model never saw: they still encode)."""

    def collator(self, tokenizer: Any) -> Callable[[list[Row]], dict[str, Any]]:
        """Pads model keys with the library's collator; integer ids travel along."""
        return PassThroughCollator(self.library_collator(tokenizer))

    @abstractmethod
    def library_collator(self, tokenizer: Any) -> Any:
        """The transformers collator that pads this task's model inputs and labels."""

    # --- decoding and metrics --------------------------------------------------------------
    @abstractmethod
    def row_output(self, probs: np.ndarray, row: Row) -> RowOutput:
        """Predictions carried by one encoded row, from its probabilities ([T, C] or [C])."""

    @abstractmethod
    def assemble(
        self,
        examples: Sequence[Example],
        labels: Sequence[str],
        outputs: Mapping[int, RowOutput],
        rows: Sequence[Row],
    ) -> tuple[list[list[int]], list[Any]]:
        """Per example: predicted label ids and confidences, from every row's output."""

    @abstractmethod
    def evaluate(
        self,
        examples: Sequence[Example],
        labels: Sequence[str],
        pred: Sequence[Sequence[int]],
        conf: Sequence[Any],
    ) -> Evaluation:
        """Metrics (with the headline), per-class scores and confusion."""

    @abstractmethod
    def mistake(
        self,
        index: int,
        example: Example,
        labels: Sequence[str],
        pred: Sequence[int],
        conf: Any,
    ) -> tuple[tuple[float, ...], dict[str, Any]] | None:
        """The error-report row of a wrongly predicted example (`index`: its place in the
        test set) and its rank, lower read first; None when the prediction is right.
        `emergent.evaluation.mistakes` keeps the worst for `reports/<task>/errors.jsonl`."""

    @abstractmethod
    def outcome_counts(
        self, examples: Sequence[Example], labels: Sequence[str], pred: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Per example, the counts its headline metric is built from ([examples, k]): they
        add up over examples, so a bootstrap resample is a sum of rows
        (`emergent.evaluation.bootstrap`)."""

    @abstractmethod
    def headline_from_counts(self, totals: np.ndarray) -> np.ndarray:
        """The headline metric (a fraction, as in `evaluate`) from summed `outcome_counts`
        ([..., k] -> [...]); equals the library's figure on the same predictions."""

    def scores_from_counts(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """The headline and every `interval_metrics` score from summed `outcome_counts`
        ([..., k] -> {name: [...]}); a kind with interval metrics computes them all at once."""
        return {self.headline.metric: self.headline_from_counts(totals)}

    # --- serving (numpy only) ---------------------------------------------------------------
    @abstractmethod
    def respond(self, text: str, windows: Sequence[Window], labels: Sequence[str]) -> dict:
        """The API answer for one text from its encoded window(s) and their probabilities."""

    #: whether long inputs are split into overlapping windows (else truncated)
    windowed: ClassVar[bool] = False
    #: whether the model pools one vector per input (`finetune.<task>.pooling` applies)
    pools: ClassVar[bool] = False
    #: whether encoded rows carry word shapes (`emergent.tasks.shapes`) a model may read
    reads_shapes: ClassVar[bool] = False


@dataclass
class Window:
    """One encoded window of a served text: probabilities and where its tokens come from."""

    probs: np.ndarray  # [T, C] (token tasks) or [C] (sequence tasks)
    word_ids: Sequence[int | None]
    offsets: Sequence[tuple[int, int]]


class PassThroughCollator:
    """Wraps a transformers collator: model keys are padded by it, integer ids (`example`,
    `row`) become tensors beside them, bookkeeping keys (`_...`) stay behind."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, rows: list[Row]) -> dict[str, Any]:
        import torch

        batch = self.inner([{k: r[k] for k in MODEL_KEYS if k in r} for r in rows])
        if SHAPES_INPUT in rows[0]:  # word shapes: padded like the ids, with 0 ("no word")
            width = batch["input_ids"].shape[1]
            left = getattr(getattr(self.inner, "tokenizer", None), "padding_side", "right")
            shapes = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                values = torch.tensor(r[SHAPES_INPUT][:width], dtype=torch.long)
                if left == "left":
                    shapes[i, width - len(values) :] = values
                else:
                    shapes[i, : len(values)] = values
            batch[SHAPES_INPUT] = shapes
        for key in ("example", "row"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.long)
        return dict(batch)


def pick_headline(metric: str, scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """`scores[metric]`, or a ValueError naming the metrics a bootstrap can resample."""
    if metric not in scores:
        raise ValueError(
            f"headline.metric {metric!r} has no bootstrap interval (one of {sorted(scores)})"
        )
    return scores[metric]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
