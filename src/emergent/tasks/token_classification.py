"""Token classification (NER): IOB2 tags per word, entity-level scores with seqeval.

Labels are aligned to sub-words as in HF `run_ner.py`, through `word_ids`: the first
sub-token of a word carries the word's label and the rest are ignored (-100), or with
`label_all_tokens` every sub-token gets it (B- turned into I- after the first).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from emergent.errors import ConfigError, DataError, ExampleError
from emergent.tasks.base import (
    Evaluation,
    Example,
    Row,
    RowOutput,
    Task,
    Window,
    pick_headline,
)
from emergent.tasks.decoding import CONFIG_KEY as SCORES_KEY
from emergent.tasks.decoding import DECODINGS, TagScores, decode
from emergent.tasks.shapes import INPUT, token_shapes
from emergent.tasks.windows import clamp_stride, owned_positions

if TYPE_CHECKING:
    from emergent.schema import TaskDataConfig

IGNORE = -100
OUTSIDE = "O"


class TokenClassificationTask(Task):
    kind: ClassVar[str] = "token classification"
    example_fields: ClassVar[tuple[str, ...]] = ("tokens", "tags")
    lora_task_type: ClassVar[str] = "TOKEN_CLS"
    windowed: ClassVar[bool] = True
    reads_shapes: ClassVar[bool] = True
    learns_transitions: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        headline: Mapping[str, Any],
        stride: int = 32,
        decoding: str = "argmax",
        tag_scores: TagScores | None = None,
        **kw: Any,
    ):
        super().__init__(name, headline, **kw)
        self.stride = int(stride)
        # argmax: each word on its own (what packages exported before `decoding` existed
        # did); viterbi: the best well-formed IOB2 sequence (`emergent.tasks.decoding`).
        if decoding not in DECODINGS:
            raise ConfigError(f"tasks.{name}.decoding", f"must be one of {DECODINGS}")
        self.decoding = str(decoding)
        # A CRF-trained model's learned transition scores (`for_model`; an export package's
        # task definition carries them); None: the masks alone.
        self.tag_scores = tag_scores

    def for_model(self, config: Any) -> TokenClassificationTask:
        scores = getattr(config, SCORES_KEY, None)
        if scores is None:
            return self
        bound = copy.copy(self)
        bound.tag_scores = scores
        return bound

    def model_spec(self) -> dict[str, Any]:
        return {} if self.tag_scores is None else {"tag_scores": self.tag_scores}

    # --- data ------------------------------------------------------------------------------
    def detect_format(self, path: Path, configured: str) -> str:
        from emergent.data.formats import detect_format

        return detect_format(path, configured, tokens=True)

    def read(
        self, path: Path, fmt: str, data_cfg: TaskDataConfig, source: str
    ) -> tuple[list[Example], int]:
        from emergent.data import formats

        if fmt not in {"jsonl", "conll"}:
            raise DataError(
                source, f"format {fmt!r} is not supported for {self.kind} (conll, jsonl)"
            )
        reader = formats.read_ner_jsonl if fmt == "jsonl" else formats.read_conll
        types = data_cfg.entity_types
        return reader(path, data_cfg.encoding, types, label=source, task=self.name), 0

    def normalize(self, example: Example, normalize_text: Callable[[str], str]) -> Example | None:
        tokens = [normalize_text(t) for t in example["tokens"]]
        return {"tokens": tokens, "tags": list(example["tags"])} if tokens else None

    def text(self, example: Example) -> str:
        return " ".join(example["tokens"])

    def key(self, example: Example) -> Any:
        return tuple(example["tokens"])

    def label_counts(self, examples: Sequence[Example]) -> dict[str, int]:
        return dict(sorted(Counter(t for e in examples for t in e["tags"]).items()))

    def labels(self, examples: Sequence[Example]) -> list[str]:
        """`O` first, then B-/I- of every entity type seen, sorted by type."""
        types = sorted({t[2:] for e in examples for t in e["tags"] if t != OUTSIDE})
        return [OUTSIDE] + [f"{p}-{t}" for t in types for p in ("B", "I")]

    def check_fields(self, example: Example, labels: Sequence[str], max_chars: int) -> None:
        """Words the service could predict for (strings without whitespace, not empty, their
        text within `max_chars`) and one tag of the model's tag set per word, in IOB2."""
        from emergent.data.formats import iob2_error

        tokens, tags = example["tokens"], example["tags"]
        for name, values in (("tokens", tokens), ("tags", tags)):
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ExampleError(name, "must be a list of strings")
        if not tokens:
            raise ExampleError("tokens", "is empty")
        for i, token in enumerate(tokens):
            if not token or any(c.isspace() for c in token):
                raise ExampleError("tokens", f"tokens[{i}] {token!r}: one word, no whitespace")
        if len(self.text(example)) > max_chars:
            raise ExampleError(
                "tokens", f"has {len(self.text(example))} characters; at most {max_chars}"
            )
        if len(tags) != len(tokens):
            raise ExampleError("tags", f"{len(tags)} tags for {len(tokens)} tokens")
        known = set(labels)
        for i, tag in enumerate(tags):
            if tag not in known:
                raise ExampleError(
                    "tags", f"tags[{i}] {tag!r} is not a tag of the model ({', '.join(labels)})"
                )
        bad = iob2_error(list(tags))
        if bad is not None:
            previous = repr(tags[bad - 1]) if bad else "the start"
            raise ExampleError(
                "tags",
                f"tags[{bad}] {tags[bad]!r} follows {previous}: not IOB2 "
                f"(I-X only after B-X or I-X)",
            )

    def quality_checks(
        self, splits: Mapping[str, list[Example]], data_cfg: TaskDataConfig
    ) -> list[Any]:
        from emergent.tasks.checks import token_checks

        return token_checks(self, splits, data_cfg)

    def model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    # --- encoding --------------------------------------------------------------------------
    def encode(
        self,
        tokenizer: Any,
        examples: Sequence[Example],
        labels: Sequence[str],
        max_length: int,
        *,
        unknown_labels: str = "error",
        label_all_tokens: bool = False,
    ) -> list[Row]:
        label2id = {label: i for i, label in enumerate(labels)}
        if not examples:
            return []
        enc = tokenizer(
            [list(e["tokens"]) for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            stride=clamp_stride(self.stride, max_length),
            return_overflowing_tokens=True,
        )
        windows_of: dict[int, list[int]] = {}
        for r, ex in enumerate(enc["overflow_to_sample_mapping"]):
            windows_of.setdefault(int(ex), []).append(r)
        rows: list[Row] = []
        for ex, window_rows in sorted(windows_of.items()):
            tags = examples[ex]["tags"]
            word_ids = [enc.word_ids(r) for r in window_rows]
            for r, ids, owned in zip(window_rows, word_ids, owned_positions(word_ids), strict=True):
                owner = dict(owned)
                mine = set(owner.values())
                out = [IGNORE] * len(ids)
                for pos, word in enumerate(ids):
                    if word is None or word not in mine:
                        continue
                    if pos in owner:
                        out[pos] = self._label_id(tags[word], label2id, unknown_labels, ex)
                    elif label_all_tokens:
                        tag = tags[word]
                        inside = "I-" + tag[2:]
                        if tag.startswith("B-") and inside in label2id:
                            tag = inside
                        out[pos] = self._label_id(tag, label2id, unknown_labels, ex)
                rows.append(
                    {
                        "input_ids": enc["input_ids"][r],
                        "attention_mask": enc["attention_mask"][r],
                        # case from the raw words, for models that read shapes
                        INPUT: token_shapes(ids, examples[ex]["tokens"]),
                        "labels": out,
                        "example": ex,
                        "_positions": [p for p, _ in owned],
                        "_words": [w for _, w in owned],
                    }
                )
        return rows

    def _label_id(self, tag: str, label2id: Mapping[str, int], unknown: str, ex: int) -> int:
        if tag in label2id:
            return label2id[tag]
        if unknown == "error":
            raise DataError(f"{self.name} example {ex}", f"tag {tag!r} unknown to the model")
        return label2id[OUTSIDE]  # scored against the original tags, only encoded here

    def library_collator(self, tokenizer: Any) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    # --- decoding and metrics --------------------------------------------------------------
    def row_output(self, probs: np.ndarray, row: Row) -> RowOutput:
        """Per owned word: (word, argmax id, the word's tag probabilities), so `assemble` can
        decode whole sentences across windows."""
        pos = np.asarray(row["_positions"], dtype=np.int64)
        p = probs[pos]
        return list(zip(row["_words"], p.argmax(-1).tolist(), list(p), strict=True))

    def assemble(
        self,
        examples: Sequence[Example],
        labels: Sequence[str],
        outputs: Mapping[int, RowOutput],
        rows: Sequence[Row],
    ) -> tuple[list[list[int]], list[Any]]:
        """Word-level ids (decoded per sentence, `decoding`) and the probability of each
        chosen tag; a word no window saw (it tokenized to nothing) is `O` with probability 1."""
        outside = list(labels).index(OUTSIDE)
        word_probs = []
        for e in examples:
            p = np.zeros((len(e["tokens"]), len(labels)))
            p[:, outside] = 1.0
            word_probs.append(p)
        for r, row in enumerate(rows):
            for word, _, p in outputs[r]:
                word_probs[row["example"]][word] = p
        return self.decode_words(word_probs, labels)

    def decode_words(
        self, word_probs: Sequence[np.ndarray], labels: Sequence[str]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Per sentence, tag ids and their probabilities from word tag probabilities [W, C]."""
        pred, conf = [], []
        for p in word_probs:
            ids = decode(p, labels, self.decoding, self.tag_scores)
            pred.append(ids.tolist())
            conf.append(p[np.arange(len(ids)), ids].tolist())
        return pred, conf

    def evaluate(
        self,
        examples: Sequence[Example],
        labels: Sequence[str],
        pred: Sequence[Sequence[int]],
        conf: Sequence[Any],
    ) -> Evaluation:
        from emergent.tasks.metrics import (
            classification_metrics,
            conlleval_f1,
            entity_metrics,
        )

        gold_tags = [list(e["tags"]) for e in examples]
        pred_tags = [[labels[i] for i in p] for p in pred]
        metrics, per_type = entity_metrics(gold_tags, pred_tags)
        metrics["f1_conlleval"] = conlleval_f1(gold_tags, pred_tags)
        tag_set = sorted(
            {t for s in gold_tags + pred_tags for t in s}, key=lambda t: (t != OUTSIDE, t[2:], t)
        )
        flat_gold = [t for s in gold_tags for t in s]
        flat_pred = [t for s in pred_tags for t in s]
        confusion = classification_metrics(flat_gold, flat_pred, tag_set)[2]
        return Evaluation(
            metrics=metrics,
            per_class=per_type,
            confusion=confusion,
        )

    def mistake(
        self,
        index: int,
        example: Example,
        labels: Sequence[str],
        pred: Sequence[int],
        conf: Any,
    ) -> tuple[tuple[float, ...], dict[str, Any]] | None:
        """A sentence with wrongly tagged words; the most wrong words first (ties: the least
        confident first)."""
        tags = [labels[i] for i in pred]
        gold = example["tags"]
        wrong = [i for i, (g, p) in enumerate(zip(gold, tags, strict=True)) if g != p]
        if not wrong:
            return None
        errors, min_confidence = len(wrong), round(min(conf) if conf else 1.0, 4)
        row = {
            "index": index,
            "errors": errors,
            "min_confidence": min_confidence,
            "text": " ".join(example["tokens"]),
            "mistakes": [
                {"token": example["tokens"][i], "gold": gold[i], "pred": tags[i]} for i in wrong
            ],
        }
        return (-errors, min_confidence), row

    # Columns of `outcome_counts`: entities (strict IOB2, as seqeval scores them), words, and
    # entities in conlleval's convention (seqeval's default mode).
    COUNTS: ClassVar[tuple[str, ...]] = (
        "tp",
        "predicted",
        "gold",
        "correct_words",
        "words",
        "tp_conlleval",
        "predicted_conlleval",
        "gold_conlleval",
    )
    #: metrics besides the headline that get a bootstrap interval (`scores_from_counts`)
    interval_metrics: ClassVar[tuple[str, ...]] = ("f1", "f1_conlleval")

    def outcome_counts(
        self, examples: Sequence[Example], labels: Sequence[str], pred: Sequence[Sequence[int]]
    ) -> np.ndarray:
        from seqeval.metrics.sequence_labeling import get_entities
        from seqeval.scheme import IOB2, Entities

        gold_tags = [list(e["tags"]) for e in examples]
        pred_tags = [[labels[i] for i in p] for p in pred]
        gold = Entities(gold_tags, IOB2).entities
        found = Entities(pred_tags, IOB2).entities
        rows = []
        for g, f, gt, pt in zip(gold, found, gold_tags, pred_tags, strict=True):
            g_loose, f_loose = set(get_entities(gt)), set(get_entities(pt))
            rows.append(
                [
                    len(set(g) & set(f)),
                    len(f),
                    len(g),
                    sum(a == b for a, b in zip(gt, pt, strict=True)),
                    len(gt),
                    len(g_loose & f_loose),
                    len(f_loose),
                    len(g_loose),
                ]
            )
        return np.array(rows, dtype=np.int64).reshape(len(examples), len(self.COUNTS))

    def scores_from_counts(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Every score the counts give ([..., k] -> {name: [...]})."""
        from emergent.tasks.metrics import precision_recall_f1, ratio

        tp, predicted, gold, correct, words, tp_c, predicted_c, gold_c = np.moveaxis(
            np.asarray(totals), -1, 0
        )
        return {
            **precision_recall_f1(tp, predicted, gold),
            "accuracy": ratio(correct, words),
            "f1_conlleval": precision_recall_f1(tp_c, predicted_c, gold_c)["f1"],
        }

    def headline_from_counts(self, totals: np.ndarray) -> np.ndarray:
        return pick_headline(self.headline.metric, self.scores_from_counts(totals))

    # --- serving ---------------------------------------------------------------------------
    def respond(self, text: str, windows: Sequence[Window], labels: Sequence[str]) -> dict:
        """Entities with character offsets into `text`, type and mean word probability."""
        from seqeval.metrics.sequence_labeling import get_entities

        owned = owned_positions([w.word_ids for w in windows])
        words: dict[int, tuple[int, int, np.ndarray]] = {}
        for window, pairs in zip(windows, owned, strict=True):
            for pos, word in pairs:
                start = int(window.offsets[pos][0])
                # the word ends where its last sub-token in this window ends
                end = max(
                    int(window.offsets[q][1]) for q, w in enumerate(window.word_ids) if w == word
                )
                words[word] = (start, end, np.asarray(window.probs[pos]))
        order = sorted(words)
        probs = np.stack([words[w][2] for w in order]) if order else np.zeros((0, len(labels)))
        (tags,), (scores,) = self.decode_words([probs], labels)
        spans = [
            (words[w][0], words[w][1], labels[t], c)
            for w, t, c in zip(order, tags, scores, strict=True)
        ]
        entities = []
        for kind, first, last in get_entities([s[2] for s in spans]):
            chunk = spans[first : last + 1]
            start, end = chunk[0][0], chunk[-1][1]
            entities.append(
                {
                    "type": kind,
                    "start": start,
                    "end": end,
                    "text": text[start:end],
                    "score": round(float(np.mean([s[3] for s in chunk])), 4),
                }
            )
        return {"entities": entities}
