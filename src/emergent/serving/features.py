"""Per-prediction monitoring features, computed from the predictor's tokenizer and output rows.

Kept out of predictor.py on purpose: the predictor predicts; this module describes inputs and
outputs for metrics, the request store and drift monitoring (never the raw text).
"""

from __future__ import annotations

from typing import Any


def backend_tokenizer(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a tokenizer (a transformers fast tokenizer wraps one)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


_PLAIN: dict[int, tuple[Any, Any]] = {}


def plain_tokenizer(tokenizer: Any) -> Any:
    """A private copy of the backend tokenizer without padding or truncation, made once per
    tokenizer: the predictor's batched calls leave padding enabled on the shared backend, which
    would count pad tokens (and mutating the shared one would race with inference)."""
    hit = _PLAIN.get(id(tokenizer))
    if hit is None or hit[0] is not tokenizer:
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(backend_tokenizer(tokenizer).to_str())
        plain.no_padding()
        plain.no_truncation()
        hit = _PLAIN[id(tokenizer)] = (tokenizer, plain)
    return hit[1]


def unk_id(tokenizer: Any) -> int | None:
    backend = backend_tokenizer(tokenizer)
    token = getattr(backend.model, "unk_token", None)
    return backend.token_to_id(token) if token else None


def token_features(tokenizer: Any, texts: list[str]) -> list[dict[str, float]]:
    """Tokens per text (no special tokens, before truncation) and the share that are unknown."""
    backend = plain_tokenizer(tokenizer)
    unk = unk_id(tokenizer)
    rows = []
    for enc in backend.encode_batch(texts, add_special_tokens=False):
        n = len(enc.ids)
        unknown = sum(1 for i in enc.ids if i == unk) if unk is not None else 0
        rows.append({"n_tokens": n, "unk_share": unknown / n if n else 0.0})
    return rows


def output_features(row: dict[str, Any]) -> dict[str, Any]:
    """Confidence and predicted label from one output row, whatever the output shape.

    Classification rows carry `probabilities`: confidence is the top probability. Entity rows
    carry `entities`: confidence is their mean score (1.0 with none: nothing was doubted), the
    label is the most frequent entity type (`none` without entities).
    """
    if "probabilities" in row:
        return {
            "confidence": float(max(row["probabilities"].values())),
            "label": str(row["label"]),
            "n_entities": 0,
        }
    entities = row.get("entities", [])
    if not entities:
        return {"confidence": 1.0, "label": "none", "n_entities": 0}
    types = [e["type"] for e in entities]
    return {
        "confidence": sum(float(e["score"]) for e in entities) / len(entities),
        "label": max(sorted(set(types)), key=types.count),
        "n_entities": len(entities),
    }


def features(tokenizer: Any, texts: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One feature dict per text: length, tokens, unknown-token share, confidence, label."""
    return [
        {"n_chars": len(text), **tok, **output_features(row)}
        for text, tok, row in zip(texts, token_features(tokenizer, texts), rows, strict=True)
    ]
