"""Word shapes: the case information an uncased tokenizer throws away, as one small id per
sub-token.

An uncased backbone's tokenizer lower-cases every word before the model sees it, so
capitalisation, the strongest single cue for names, never reaches it. A word's shape (lower,
Capitalised, ALL CAPS, mixed case, has a digit, other) is computed from the raw text and given
to every sub-token of the word; the model adds a learned embedding of it to the sub-token's
input embedding. The embedding rides in BERT's token-type (segment) table, so the graph stays
the standard BERT graph: ONNX Runtime's fusion, int8 quantization and pruning treat it as any
segment embedding, and the exported graph takes it as the input `word_shape_ids`.

Pure python, no torch: training (`TokenClassificationTask.encode`), evaluation, export and the
torch-free server all compute shapes with these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Id 0 is "no word" (special tokens, padding): the segment-0 embedding every model has.
SHAPES = ("none", "lower", "capitalised", "upper", "mixed", "digit", "other")
N_SHAPES = len(SHAPES)
INPUT = "word_shape_ids"  # the batch key and the exported graph's input name
CONFIG_KEY = "word_shapes"  # in a model's config.json: true when it reads shapes


def word_shape(word: str) -> int:
    """The shape id of one word, from its letters and digits (punctuation around them does
    not change a word's shape: `Obama's` is Capitalised, `#Trump` too)."""
    letters = [c for c in word if c.isalpha()]
    if any(c.isdigit() for c in word):
        return SHAPES.index("digit")
    if not letters:
        return SHAPES.index("other")
    cased = [c for c in letters if c.isupper() or c.islower()]
    if not cased:  # scripts without case
        return SHAPES.index("other")
    if all(c.islower() for c in cased):
        return SHAPES.index("lower")
    if all(c.isupper() for c in cased):
        return SHAPES.index("upper") if len(cased) > 1 else SHAPES.index("capitalised")
    if cased[0].isupper() and all(c.islower() for c in cased[1:]):
        return SHAPES.index("capitalised")
    return SHAPES.index("mixed")


def token_shapes(word_ids: Sequence[int | None], words: Sequence[str]) -> list[int]:
    """Per sub-token, the shape of the word it belongs to (`none` for special tokens)."""
    cache: dict[int, int] = {}
    out = []
    for w in word_ids:
        if w is None:
            out.append(0)
            continue
        if w not in cache:
            cache[w] = word_shape(words[w])
        out.append(cache[w])
    return out


def text_shapes(
    text: str, word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]]
) -> list[int]:
    """`token_shapes` for a raw text encoding (the server's path): each word is the span of
    the original text its sub-tokens cover, case intact (offsets point into `text`)."""
    spans: dict[int, list[int]] = {}
    for w, (start, end) in zip(word_ids, offsets, strict=True):
        if w is None:
            continue
        span = spans.setdefault(w, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    words = {w: text[s:e] for w, (s, e) in spans.items()}
    return [0 if w is None else word_shape(words[w]) for w in word_ids]


def uses_shapes(config: Any) -> bool:
    """Whether a model (its HF config) reads word shapes."""
    return bool(getattr(config, CONFIG_KEY, False))


def model_inputs(config: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword inputs of a HF model call for a padded batch: the ids and mask, and the
    shapes as token-type ids for a model that reads them."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if uses_shapes(config):
        inputs["token_type_ids"] = batch[INPUT]
    return inputs
