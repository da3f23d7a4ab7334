"""Predictions of any forward function (PyTorch, ONNX Runtime) over a task's examples.

Rows are batched by length (sorted), so a batch pads to its own longest row instead of the
longest of a shuffled mix; the task puts row outputs back together per example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from emergent.tasks import Task
from emergent.tasks.base import Example, Row, RowOutput, softmax
from emergent.tasks.shapes import model_inputs

Forward = Callable[[dict[str, Any]], Any]


def length_sorted(rows: Sequence[Row], batch_size: int) -> list[list[int]]:
    """Row indices in batches of similar length (stable: ties keep their order)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batches(
    task: Task, tokenizer: Any, rows: Sequence[Row], batch_size: int
) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """(row indices, padded batch) in length order."""
    collate = task.collator(tokenizer)
    for chunk in length_sorted(rows, batch_size):
        yield chunk, collate([rows[i] for i in chunk])


def encode_for_scoring(
    task: Task, tokenizer: Any, examples: Sequence[Example], labels: Sequence[str], max_length: int
) -> list[Row]:
    """Rows of labelled examples for a trained model's label set (gold labels the model
    never saw still encode; they are scored against the original labels)."""
    return task.encode(tokenizer, examples, labels, max_length, unknown_labels="ignore")


def run_rows(
    task: Task, forward: Forward, tokenizer: Any, rows: Sequence[Row], batch_size: int = 64
) -> dict[int, RowOutput]:
    import torch

    outputs: dict[int, RowOutput] = {}
    with torch.inference_mode():
        for chunk, batch in batches(task, tokenizer, rows, batch_size):
            logits = forward(batch)
            logits = logits.float().numpy() if isinstance(logits, torch.Tensor) else logits
            probs = softmax(np.asarray(logits, dtype=np.float64))
            for j, i in enumerate(chunk):
                outputs[i] = task.row_output(probs[j], rows[i])
    return outputs


def predict(
    task: Task,
    forward: Forward,
    tokenizer: Any,
    examples: Sequence[Example],
    labels: Sequence[str],
    max_length: int,
    batch_size: int = 64,
) -> tuple[list[list[int]], list[Any]]:
    """Per example: predicted label ids (one per word, or one per text) and confidences."""
    rows = encode_for_scoring(task, tokenizer, examples, labels, max_length)
    outputs = run_rows(task, forward, tokenizer, rows, batch_size)
    return task.assemble(examples, labels, outputs, rows)


def torch_forward(model: Any) -> Forward:
    """(padded batch) -> logits, for a transformers model."""

    def forward(batch: dict[str, Any]) -> Any:
        return model(**model_inputs(model.config, batch)).logits

    return forward
