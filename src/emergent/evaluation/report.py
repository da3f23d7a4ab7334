"""Test-set evaluation shared by the evaluate and export stages: predictions from any forward
function, task metrics, the error report and confusion data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader

from emergent.data.sources import DataError
from emergent.data.tasks import Collator, encode
from emergent.evaluation import errors
from emergent.evaluation.metrics import classification_metrics, ner_metrics
from emergent.evaluation.predict import align_to_words, run_batches

ERRORS_KEPT = 50


def labelled_batches(
    task: str,
    tokenizer: Any,
    examples: list[dict],
    labels: list[str],
    max_length: int,
    batch_size: int = 64,
) -> DataLoader:
    """Padded batches of labelled test examples for a trained model's label set.

    NER gold tags the model never saw map to id 0 (`O`): predictions are scored against the
    original tags, so they only need to encode. An unknown sentiment label is an error.
    """
    label2id = {label: i for i, label in enumerate(labels)}
    if task == "ner":
        label2id = {**{t: 0 for e in examples for t in e["tags"]}, **label2id}
    else:
        unknown = sorted({str(e["label"]) for e in examples} - set(labels))
        if unknown:
            raise DataError("test data", f"labels {unknown} unknown to the model ({labels})")
    rows = encode(task, tokenizer, examples, label2id, max_length)
    return DataLoader(rows, batch_size=batch_size, collate_fn=Collator(tokenizer.pad_token_id))


def predict(
    task: str,
    forward: Callable[[dict[str, Any]], Any],
    tokenizer: Any,
    examples: list[dict],
    labels: list[str],
    max_length: int,
    batch_size: int = 64,
) -> tuple[list, list, list]:
    """Word-level predictions (NER) or labels (sentiment) with probabilities, from any forward
    function (PyTorch, ONNX Runtime) that maps a padded batch to logits."""
    loader = labelled_batches(task, tokenizer, examples, labels, max_length, batch_size)
    return run_batches(forward, loader, task)


def torch_forward(model: Any) -> Callable[[dict[str, Any]], Any]:
    def forward(batch: dict[str, Any]) -> Any:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    return forward


def task_metrics(
    task: str, examples: list[dict], labels: list[str], pred: list, conf: list
) -> tuple[dict, list[dict], dict]:
    """Metrics JSON, the error report and the confusion data (labels, matrix)."""
    if task == "ner":
        gold_tags = [e["tags"] for e in examples]
        pred_ids = align_to_words(gold_tags, pred)
        pred_tags = [[labels[i] for i in p] for p in pred_ids]
        metrics = ner_metrics(gold_tags, pred_tags)
        conf = align_to_words(gold_tags, conf, outside=1.0)  # type: ignore[arg-type]
        tag_set = sorted(
            {t for s in gold_tags + pred_tags for t in s}, key=lambda t: (t != "O", t[2:], t)
        )
        index = {t: i for i, t in enumerate(tag_set)}
        confusion = classification_metrics(
            [index[t] for s in gold_tags for t in s],
            [index[t] for s in pred_tags for t in s],
            tag_set,
        )["confusion_matrix"]
        report = errors.ner_errors(examples, pred_tags, conf, ERRORS_KEPT)
        return metrics, report, confusion
    label2id = {label: i for i, label in enumerate(labels)}
    gold = [label2id[str(e["label"])] for e in examples]
    flat = [p[0] for p in pred]
    full = classification_metrics(gold, flat, labels)
    confusion = full.pop("confusion_matrix")
    report = errors.classification_errors(examples, labels, flat, conf, ERRORS_KEPT)
    return full, report, confusion
