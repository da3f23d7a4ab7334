"""Prompts and label-word scores for causal (decoder-only) language models.

A causal LM predicts the next word, so its template must *end* with the label slot:
`"Review: {text}\\nSentiment: {mask}"`. The whitespace before `{mask}` belongs to the label
word (` positive` is one token of a byte-level BPE vocabulary, `positive` another), so the
prompt stops at `Sentiment:` and the word is scored as ` positive`. A cloze template with text
after `{mask}` needs a masked LM and is refused with the key named.

Prompting is `raw` (the template is the whole input) or `chat` (the template, without its
slot, is the user's turn of the model's chat template and the label word opens the
assistant's answer). In-context demonstrations come first: raw prompts separate them with a
blank line; chat prompts make each one a user turn answered by its label word.

Scoring runs the backbone over the prompt and applies the vocabulary head at each prompt's
last position only (the head of a 49k-word vocabulary is a fifth of a small LM's compute).
Demonstrations shared by every query are encoded once into a key/value cache (`Prefix`) that
every batch of queries extends: the prefix of k=16 demonstrations per class is ~30x longer
than a query, so this is what makes in-context learning affordable on 2 cores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from emergent.fewshot import FewShotConfigError
from emergent.fewshot.verbalizers import require_distinct, require_words

Prompting = Literal["raw", "chat"]
SLOT = "{mask}"
SEPARATOR = "\n\n"  # between raw demonstrations


@dataclass(frozen=True)
class CausalTemplate:
    """A next-word template: the text around `{text}`, and the space before the label word."""

    prefix: str
    middle: str  # between the text and the label word (`\nSentiment:`)
    word_space: str  # whitespace the label word starts with (` `)

    @classmethod
    def parse(cls, pattern: str, key: str) -> CausalTemplate:
        if pattern.count("{text}") != 1 or pattern.count(SLOT) != 1:
            raise FewShotConfigError(f"{key}={pattern!r} needs exactly one {{text}} and one {SLOT}")
        if pattern.rstrip().endswith(SLOT) is False or pattern.index(SLOT) < pattern.index(
            "{text}"
        ):
            raise FewShotConfigError(
                f"{key}={pattern!r}: a causal LM predicts the next word, so {SLOT} must end the "
                "template after {text}; a cloze template (text after the slot) needs a masked LM"
            )
        prefix, rest = pattern.split("{text}")
        before = rest[: rest.index(SLOT)]
        middle = before.rstrip(" ")
        return cls(prefix, middle, before[len(middle) :])

    def query(self, text: str) -> str:
        return f"{self.prefix}{text}{self.middle}"

    def word(self, word: str) -> str:
        return f"{self.word_space}{word}"


@dataclass(frozen=True)
class CausalPrompter:
    """Turns (demonstrations, query) into a prefix shared by every query and a query suffix."""

    tokenizer: Any
    template: CausalTemplate
    prompting: Prompting
    text_tokens: int  # each text (query or demonstration) is cut to this many tokens

    def cut(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (
            text if len(ids) <= self.text_tokens else self.tokenizer.decode(ids[: self.text_tokens])
        )

    def answer(self, word: str) -> str:
        """The label word as the model should produce it after the prompt."""
        return word if self.prompting == "chat" else self.template.word(word)

    def _messages(self, demos: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        messages = []
        for text, word in demos:
            messages += [
                {"role": "user", "content": self.template.query(self.cut(text)).strip()},
                {"role": "assistant", "content": word},
            ]
        return messages

    def split(self, demos: Sequence[tuple[str, str]], text: str) -> tuple[str, str]:
        """(shared prefix, query part): their concatenation is the whole prompt."""
        query = self.template.query(self.cut(text))
        if self.prompting == "raw":
            prefix = "".join(
                f"{self.template.query(self.cut(t))}{self.template.word(w)}{SEPARATOR}"
                for t, w in demos
            )
            return prefix, query
        history = self._messages(demos)
        whole = self.tokenizer.apply_chat_template(
            [*history, {"role": "user", "content": query.strip()}],
            tokenize=False,
            add_generation_prompt=True,
        )
        # The prefix is what the conversation renders before the query's turn; chat templates
        # add a system turn to the first message, so render it from the history itself.
        prefix = self.tokenizer.apply_chat_template(history, tokenize=False) if history else ""
        if not whole.startswith(prefix):
            raise FewShotConfigError(
                "model.prompting=chat: the chat template does not render the demonstrations as "
                "a prefix of the whole conversation; use model.prompting=raw"
            )
        return prefix, whole[len(prefix) :]

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def label_word_ids(
    prompter: CausalPrompter, words: Mapping[str, str], labels: Sequence[str], key: str
) -> tuple[int, ...]:
    """The one vocabulary id each label's word starts the answer with (checked unique)."""
    require_words(words, labels, key)
    ids = []
    for label in labels:
        pieces = prompter.ids(prompter.answer(str(words[label])))
        if len(pieces) != 1:
            shown = prompter.tokenizer.convert_ids_to_tokens(pieces)
            raise FewShotConfigError(
                f"{key}.{label}={words[label]!r} is not one token of the model's vocabulary "
                f"after the prompt (tokenized as {shown}); choose a word it keeps whole"
            )
        ids.append(pieces[0])
    require_distinct(ids, words, key)
    return tuple(ids)


class Prefix:
    """The key/value cache of a token prefix, computed once and extended by every batch."""

    def __init__(self, model: Any, ids: Sequence[int]) -> None:
        self.length = len(ids)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        if ids:
            with torch.inference_mode():
                cache = model.model(input_ids=torch.tensor([list(ids)]), use_cache=True).cache
            self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def cache(self, batch: int) -> Any:
        """A fresh cache for `batch` queries (the model appends to it; ours stays intact)."""
        from transformers import DynamicCache

        if not self.layers:
            return None
        return DynamicCache(
            ddp_cache_data=[
                (k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in self.layers
            ]
        )


def last_logits(
    model: Any, rows: Sequence[Sequence[int]], pad_id: int, prefix: Prefix | None = None
) -> torch.Tensor:
    """Full-vocabulary logits after each row's last token ([N, vocab]); rows right-padded.

    With right padding a row's last real token never attends to the padding after it, and the
    positions continue from the prefix, so cached and uncached scores agree.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row))
        mask[i, : len(row)] = 1
    past = prefix.length if prefix is not None else 0
    attention = torch.cat([torch.ones((len(rows), past), dtype=torch.long), mask], 1)
    hidden = model.model(
        input_ids=ids,
        attention_mask=attention,
        cache=prefix.cache(len(rows)) if prefix is not None else None,
        use_cache=prefix is not None,
    ).last_hidden_state
    last = mask.sum(1) - 1
    return model.lm_head(hidden[torch.arange(len(rows)), last])


def label_logprobs(
    model: Any,
    rows: Sequence[Sequence[int]],
    word_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 16,
    prefix: Prefix | None = None,
) -> torch.Tensor:
    """log p(label word | prompt) over the whole vocabulary: [N, labels], no gradient.

    Batches are formed in order of length (less padding: review lengths vary ~10x) and the
    scores returned in the rows' order."""
    was_training = model.training
    model.eval()
    ids = torch.tensor(list(word_ids))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty(len(rows), len(ids))
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = order[start : start + batch_size]
            logits = last_logits(model, [rows[i] for i in chunk], pad_id, prefix)
            out[chunk] = logits.float().log_softmax(-1)[:, ids]
    model.train(was_training)
    return out
