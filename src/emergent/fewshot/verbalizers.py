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


def build_verbalizer(
    tokenizer: Any, words: Mapping[str, str], labels: Sequence[str], key: str
) -> Verbalizer:
    """Check that every label has a word and every word is one in-vocabulary token.

    `key` is the config key of the mapping (`fewshot.tasks.<task>.verbalizer`) for the error.
    """
    missing = [label for label in labels if label not in words]
    if missing:
        raise FewShotConfigError(
            f"{key}: no word for label(s) {missing}; labels are {list(labels)}"
        )
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
    if len(set(ids)) != len(ids):
        raise FewShotConfigError(f"{key}: two labels share a word ({dict(words)})")
    return Verbalizer(tuple(labels), tuple(str(words[label]) for label in labels), tuple(ids))
