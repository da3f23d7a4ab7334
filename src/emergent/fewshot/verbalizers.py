"""Verbalizers: each label is a single word of the model's vocabulary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emergent.fewshot import FewShotConfigError


@dataclass(frozen=True)
class Verbalizer:
    labels: tuple[str, ...]
    words: tuple[str, ...]
    token_ids: tuple[int, ...]

    def index(self, label: str) -> int:
        return self.labels.index(label)


def single_token_id(tokenizer: Any, word: str) -> int | None:
    """The vocabulary id of `word` if the tokenizer keeps it as exactly one known token."""
    pieces = tokenizer.tokenize(word)
    if len(pieces) != 1 or pieces[0] == tokenizer.unk_token:
        return None
    return int(tokenizer.convert_tokens_to_ids(pieces[0]))


def require_words(words: Mapping[str, str], labels: Sequence[str], key: str) -> None:
    """Every label has a word (masked and causal verbalizers alike)."""
    missing = [label for label in labels if label not in words]
    if missing:
        raise FewShotConfigError(
            f"{key}: no word for label(s) {missing}; labels are {list(labels)}"
        )


def require_distinct(ids: Sequence[int], words: Mapping[str, str], key: str) -> None:
    """No two labels are read off the same vocabulary id."""
    if len(set(ids)) != len(ids):
        raise FewShotConfigError(f"{key}: two labels share a word ({dict(words)})")


def build_verbalizer(
    tokenizer: Any, words: Mapping[str, str], labels: Sequence[str], key: str
) -> Verbalizer:
    """Check that every label has a word and every word is one in-vocabulary token.

    `key` is the config key of the mapping (`fewshot.tasks.<task>.verbalizer`) for the error.
    """
    require_words(words, labels, key)
    ids = []
    for label in labels:
        token = single_token_id(tokenizer, str(words[label]))
        if token is None:
            pieces = tokenizer.tokenize(str(words[label]))
            raise FewShotConfigError(
                f"{key}.{label}={words[label]!r} is not a single token of the model's vocabulary "
                f"(tokenized as {pieces}); choose a word the tokenizer keeps whole"
            )
        ids.append(token)
    require_distinct(ids, words, key)
    return Verbalizer(tuple(labels), tuple(str(words[label]) for label in labels), tuple(ids))
