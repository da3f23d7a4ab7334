"""Sequence classification (sentiment, debate party, any labelled text file): one label per
text, accuracy and macro scores with scikit-learn."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from emergent.errors import DataError, ExampleError
from emergent.tasks.base import (
    Evaluation,
    Example,
    Row,
    RowOutput,
    Task,
    Window,
    pick_headline,
)

if TYPE_CHECKING:
    from emergent.schema import TaskDataConfig

# Label of an example whose gold label the model does not know (scoring only): torch's
# cross-entropy ignores it, and it is scored against the example's own label.
IGNORE_LABEL = -100


class SequenceClassificationTask(Task):
    kind: ClassVar[str] = "sequence classification"
    example_fields: ClassVar[tuple[str, ...]] = ("text", "label")
    lora_task_type: ClassVar[str] = "SEQ_CLS"
    pools: ClassVar[bool] = True

    # --- data ------------------------------------------------------------------------------
    def detect_format(self, path: Path, configured: str) -> str:
        from emergent.data.formats import detect_format

        return detect_format(path, configured, tokens=False)

    def read(
        self, path: Path, fmt: str, data_cfg: TaskDataConfig, source: str
    ) -> tuple[list[Example], int]:
        from emergent.data import formats

        return formats.read_labeled_text(
            path,
            fmt,
            text_column=data_cfg.text_column,
            label_column=data_cfg.label_column,
            label_map=data_cfg.label_map,
            skip_labels=list(data_cfg.skip_labels or []),
            encoding=data_cfg.encoding,
            label=source,
            task=self.name,
        )

    def normalize(self, example: Example, normalize_text: Callable[[str], str]) -> Example | None:
        text = normalize_text(example["text"])
        return {"text": text, "label": str(example["label"])} if text else None

    def text(self, example: Example) -> str:
        return example["text"]

    def stratify(self, example: Example) -> Any:
        return str(example["label"])

    def label_counts(self, examples: Sequence[Example]) -> dict[str, int]:
        return dict(sorted(Counter(str(e["label"]) for e in examples).items()))

    def labels(self, examples: Sequence[Example]) -> list[str]:
        return sorted({str(e["label"]) for e in examples})

    def check_fields(self, example: Example, labels: Sequence[str], max_chars: int) -> None:
        """A text the service would predict for (a string, not blank, within `max_chars`)
        and one of the model's labels."""
        text, label = example["text"], example["label"]
        if not isinstance(text, str):
            raise ExampleError("text", f"must be a string, not {type(text).__name__}")
        if not text.strip():
            raise ExampleError("text", "is empty")
        if len(text) > max_chars:
            raise ExampleError("text", f"has {len(text)} characters; at most {max_chars}")
        if not isinstance(label, str):
            raise ExampleError("label", f"must be a string, not {type(label).__name__}")
        if label not in labels:
            raise ExampleError(
                "label", f"unknown label {label!r}; the model's labels: {', '.join(labels)}"
            )

    def quality_checks(
        self, splits: Mapping[str, list[Example]], data_cfg: TaskDataConfig
    ) -> list[Any]:
        from emergent.tasks.checks import text_checks

        return text_checks(self, splits, data_cfg)

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    # --- encoding --------------------------------------------------------------------------
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
        """`unknown_labels="ignore"`: an example whose gold label the model does not know
        still encodes, with label -100 (left out of the loss) and is scored against its
        original label; "error" (training) refuses it, since the model cannot learn it."""
        if unknown_labels not in ("error", "ignore"):
            raise ValueError(f"unknown_labels must be 'error' or 'ignore', got {unknown_labels!r}")
        label2id = {label: i for i, label in enumerate(labels)}
        unknown = sorted({str(e["label"]) for e in examples} - set(label2id))
        if unknown and unknown_labels == "error":
            raise DataError(
                f"{self.name} data", f"labels {unknown} unknown to the model ({list(labels)})"
            )
        if not examples:
            return []
        enc = tokenizer([e["text"] for e in examples], truncation=True, max_length=max_length)
        return [
            {
                "input_ids": ids,
                "attention_mask": mask,
                "labels": label2id.get(str(e["label"]), IGNORE_LABEL),
                "example": i,
            }
            for i, (ids, mask, e) in enumerate(
                zip(enc["input_ids"], enc["attention_mask"], examples, strict=True)
            )
        ]

    def library_collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    # --- decoding and metrics --------------------------------------------------------------
    def row_output(self, probs: np.ndarray, row: Row) -> RowOutput:
        return [(0, int(probs.argmax()), probs.tolist())]

    def assemble(
        self,
        examples: Sequence[Example],
        labels: Sequence[str],
        outputs: Mapping[int, RowOutput],
        rows: Sequence[Row],
    ) -> tuple[list[list[int]], list[Any]]:
        pred: list[list[int]] = [[] for _ in examples]
        conf: list[Any] = [None for _ in examples]
        for r, row in enumerate(rows):
            ((_, label, probs),) = outputs[r]
            pred[row["example"]] = [int(label)]
            conf[row["example"]] = probs
        return pred, conf

    def evaluate(
        self,
        examples: Sequence[Example],
        labels: Sequence[str],
        pred: Sequence[Sequence[int]],
        conf: Sequence[Any],
    ) -> Evaluation:
        from emergent.tasks.metrics import classification_metrics

        gold = [str(e["label"]) for e in examples]
        predicted = [labels[p[0]] for p in pred]
        metrics, per_class, confusion = classification_metrics(gold, predicted, list(labels))
        return Evaluation(
            metrics=metrics,
            per_class=per_class,
            confusion=confusion,
        )

    def mistake(
        self,
        index: int,
        example: Example,
        labels: Sequence[str],
        pred: Sequence[int],
        conf: Any,
    ) -> tuple[tuple[float, ...], dict[str, Any]] | None:
        """A misclassified text; the most confidently wrong first."""
        predicted = labels[pred[0]]
        if predicted == str(example["label"]):
            return None
        row = {
            "index": index,
            "text": example["text"],
            "gold": str(example["label"]),
            "pred": predicted,
            "confidence": round(float(max(conf)), 4),
            "probabilities": {
                label: round(float(x), 4) for label, x in zip(labels, conf, strict=True)
            },
        }
        return (-row["confidence"],), row

    def outcome_counts(
        self, examples: Sequence[Example], labels: Sequence[str], pred: Sequence[Sequence[int]]
    ) -> np.ndarray:
        """Per text, one-hot per label: [true positive, predicted, gold] for each label (a gold
        label the model does not know counts as a miss, as scikit-learn's `labels=` does)."""
        index = {label: i for i, label in enumerate(labels)}
        counts = np.zeros((len(examples), 3, len(labels)), dtype=np.int64)
        for row, (example, p) in enumerate(zip(examples, pred, strict=True)):
            gold, predicted = index.get(str(example["label"])), p[0]
            counts[row, 1, predicted] = 1
            if gold is not None:
                counts[row, 0, gold] = gold == predicted
                counts[row, 2, gold] = 1
        return counts.reshape(len(examples), -1)

    def headline_from_counts(self, totals: np.ndarray) -> np.ndarray:
        from emergent.tasks.metrics import precision_recall_f1, ratio

        totals = np.asarray(totals)
        tp, predicted, gold = np.moveaxis(totals.reshape(*totals.shape[:-1], 3, -1), -2, 0)
        per_label = precision_recall_f1(tp, predicted, gold)
        scores = {f"{name}_macro": value.mean(-1) for name, value in per_label.items()}
        scores["accuracy"] = ratio(tp.sum(-1), predicted.sum(-1))  # one prediction per text
        return pick_headline(self.headline.metric, scores)

    # --- serving ---------------------------------------------------------------------------
    def respond(self, text: str, windows: Sequence[Window], labels: Sequence[str]) -> dict:
        probs = windows[0].probs
        return {
            "label": labels[int(probs.argmax())],
            "probabilities": {
                label: round(float(x), 4) for label, x in zip(labels, probs, strict=True)
            },
        }
