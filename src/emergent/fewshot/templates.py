"""Cloze templates and their encoding, with optional demonstrations, within max_length.

A template is a string with `{text}` and `{mask}` (e.g. `"{text} It was {mask}."`). The query
fills `{mask}` with the tokenizer's mask token; a demonstration fills it with its label word.
Demonstrations go before the query (`[CLS] demo [SEP] demo [SEP] query [SEP]`), each cut to
`demo_tokens` text tokens, and are dropped (last first) when they do not fit `max_length`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emergent.fewshot import FewShotConfigError


@dataclass(frozen=True)
class Template:
    prefix: str
    suffix: str

    @classmethod
    def parse(cls, pattern: str, key: str) -> Template:
        if pattern.count("{text}") != 1 or pattern.count("{mask}") != 1:
            raise FewShotConfigError(
                f"{key}={pattern!r} needs exactly one {{text}} and one {{mask}}"
            )
        prefix, suffix = pattern.split("{text}")
        return cls(prefix, suffix)

    def fill(self, word: str) -> tuple[str, str]:
        """(prefix, suffix) with `{mask}` replaced by `word`."""
        return self.prefix.replace("{mask}", word), self.suffix.replace("{mask}", word)


def _ids(tokenizer: Any, text: str) -> list[int]:
    if not text.strip():
        return []
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]


def encode_filled(
    tokenizer: Any, template: Template, text: str, word: str, budget: int
) -> tuple[list[int], int]:
    """Token ids of the template around `text` (cut so the whole fits `budget`) and the
    offset of the template's `{mask}` slot in them (the text itself may contain [MASK])."""
    prefix, suffix = template.fill(word)
    pre, post = _ids(tokenizer, prefix), _ids(tokenizer, suffix)
    body = _ids(tokenizer, text)[: max(budget - len(pre) - len(post), 0)]
    # The slot is searched in the template's own tokens, not in the text (which may hold
    # a literal mask token, e.g. the content-free input "[MASK]").
    if "{mask}" in template.prefix:
        offset = pre.index(tokenizer.mask_token_id) if tokenizer.mask_token_id in pre else -1
    else:
        where = post.index(tokenizer.mask_token_id) if tokenizer.mask_token_id in post else -1
        offset = -1 if where < 0 else len(pre) + len(body) + where
    return pre + body + post, offset


def encode_prompt(
    tokenizer: Any,
    template: Template,
    text: str,
    max_length: int,
    demonstrations: Sequence[tuple[str, str]] = (),
    demo_tokens: int = 48,
    query_tokens: int | None = None,
) -> dict[str, Any]:
    """`input_ids` and the [MASK] position for one query, demonstrations (text, word) first.

    The query (template included) gets up to `query_tokens` tokens, each demonstration up to
    `demo_tokens`; the whole stays within `max_length` by dropping demonstrations.
    """
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    budget = min(query_tokens or max_length, max_length) - 2
    query, offset = encode_filled(tokenizer, template, text, tokenizer.mask_token, budget)
    ids = [cls_id]
    for demo_text, word in demonstrations:
        demo, _ = encode_filled(tokenizer, template, demo_text, word, demo_tokens)
        if len(ids) + len(demo) + 1 + len(query) + 1 > max_length:
            break
        ids += [*demo, sep_id]
    if offset < 0:
        raise FewShotConfigError("template: the {mask} slot did not encode as a mask token")
    position = len(ids) + offset
    ids += [*query, sep_id]
    return {"input_ids": ids, "mask_pos": position}
