"""The few-shot protocol: every method x k (per class) x seed on one fixed test subset.

Methods: zero_shot (cloze + verbalizer), zero_shot_calibrated (contextual calibration),
in_context (k-shot demonstrations before the query, no weight update), head (a classification
head fine-tuned on the k-shot set), prompt (the MLM fine-tuned on the cloze, LM-BFF/PET) and,
on causal LMs only, prompt_self_training (prompt's model labels unlabelled texts for a second
fine-tuning; causal_lab.py).
Zero-shot methods run once (k=0, no seed dependence); the others run for every k > 0 and seed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot import FewShotConfigError
from emergent.fewshot.calibration import calibrate, content_free_prior
from emergent.fewshot.demonstrations import demonstrations_for, sample_per_class
from emergent.fewshot.metrics import classification_metrics
from emergent.fewshot.scoring import label_word_logprobs
from emergent.fewshot.templates import Template, encode_prompt
from emergent.fewshot.training import (
    TrainSettings,
    classifier_loss,
    classifier_probs,
    encode_texts,
    fit,
    load_classifier,
    load_masked_lm,
    prompt_loss,
)
from emergent.fewshot.verbalizers import Verbalizer

log = logging.getLogger(__name__)

ZERO_SHOT = ("zero_shot", "zero_shot_calibrated")
IN_CONTEXT = ("in_context", "in_context_calibrated")
PROMPT = ("prompt", "prompt_self_training")
METHODS = (*ZERO_SHOT, *IN_CONTEXT, "head", *PROMPT)


@dataclass
class FewShotData:
    labels: list[str]
    train: list[dict]  # pool the k-shot training sets are drawn from
    dev_pool: list[dict]  # pool the equally small dev sets are drawn from
    test: list[dict]  # the fixed test subset


@dataclass
class Lab:
    """One backbone (an HF masked-LM folder with its tokenizer) under the protocol."""

    path: Path
    tokenizer: Any
    template: Template
    verbalizer: Verbalizer
    data: FewShotData
    max_length: int
    query_tokens: int
    demo_tokens: int
    demos_per_class: int
    content_free: Sequence[str]
    train: Mapping[str, Any]
    classifier_class: Any  # the task's AutoModelFor... class (head fine-tuning)
    batch_size: int = 32
    bootstrap: Bootstrap | None = None  # accuracy intervals over the test texts
    family: str = "masked"
    _gold: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._gold = torch.tensor([self.label_index(e) for e in self.data.test])

    def label_index(self, example: dict) -> int:
        return self.data.labels.index(str(example["label"]))

    def supports(self, method: str) -> bool:
        # Demonstrations differ per query here, so there is no one context to calibrate;
        # self-training is built on the causal lab only.
        return method in METHODS and method not in ("in_context_calibrated", "prompt_self_training")

    def load(self) -> Any:
        """A fresh masked LM (in-context and zero-shot never train it)."""
        return load_masked_lm(self.path)

    # -- cloze scoring -------------------------------------------------------------------
    def prompts(self, examples: Sequence[dict], pool: Sequence[dict] = (), seed: int = 0) -> list:
        rng = random.Random(seed)
        words = dict(zip(self.verbalizer.labels, self.verbalizer.words, strict=True))
        out = []
        for example in examples:
            demos = (
                demonstrations_for(pool, self.data.labels, self.demos_per_class, rng, example)
                if pool
                else []
            )
            row = encode_prompt(
                self.tokenizer,
                self.template,
                example["text"],
                self.max_length,
                [(d["text"], words[str(d["label"])]) for d in demos],
                self.demo_tokens,
                self.query_tokens,
            )
            row["label"] = self.label_index(example) if "label" in example else -1
            out.append(row)
        return out

    def score(self, model: Any, prompts: Sequence[dict]) -> torch.Tensor:
        return label_word_logprobs(
            model, self.tokenizer, prompts, self.verbalizer.token_ids, self.batch_size
        )

    def cloze_metrics(self, logprobs: torch.Tensor, prior: torch.Tensor | None = None) -> dict:
        probs = logprobs.softmax(-1)
        if prior is not None:
            probs = calibrate(probs, prior)
        word = logprobs.gather(1, self._gold[:, None])[:, 0]
        metrics = classification_metrics(probs, self._gold, word, self.bootstrap)
        return {**metrics, "correct": (probs.argmax(-1) == self._gold).int().tolist()}

    def accuracy_fn(self, model: Any, prompts: Sequence[dict]) -> Callable[[Any], float]:
        gold = torch.tensor([p["label"] for p in prompts])
        return lambda m: float((self.score(m, prompts).argmax(-1) == gold).float().mean())

    # -- methods -------------------------------------------------------------------------
    def zero_shot(self, model: Any) -> dict[str, dict]:
        logprobs = self.score(model, self.prompts(self.data.test))
        free = [
            encode_prompt(
                self.tokenizer,
                self.template,
                text.replace("{mask}", self.tokenizer.mask_token),
                self.max_length,
            )
            for text in self.content_free
        ]
        prior = content_free_prior(self.score(model, free).softmax(-1))
        calibrated = self.cloze_metrics(logprobs, prior)
        calibrated["prior"] = [round(float(p), 4) for p in prior]
        return {"zero_shot": self.cloze_metrics(logprobs), "zero_shot_calibrated": calibrated}

    def in_context(self, model: Any, shots: list[dict], seed: int) -> dict[str, dict]:
        logprobs = self.score(model, self.prompts(self.data.test, shots, seed))
        return {"in_context": self.cloze_metrics(logprobs)}

    def settings(self, seed: int) -> TrainSettings:
        return TrainSettings(seed=seed, **dict(self.train))

    def prompt(
        self, shots: list[dict], dev: list[dict], seed: int, demos: bool, self_train: bool = False
    ) -> dict[str, dict]:
        if self_train:
            raise FewShotConfigError("prompt_self_training runs on causal LMs only")
        model = load_masked_lm(self.path)
        pool = shots if demos else ()
        rows, dev_rows = self.prompts(shots, pool, seed), self.prompts(dev, pool, seed + 1)
        best = fit(
            model,
            rows,
            prompt_loss(self.verbalizer.token_ids, self.tokenizer),
            self.accuracy_fn(model, dev_rows),
            self.settings(seed),
        )
        metrics = self.cloze_metrics(self.score(model, self.prompts(self.data.test, pool, seed)))
        return {"prompt": {**metrics, **best}}

    def head(self, shots: list[dict], dev: list[dict], seed: int) -> dict:
        model, new = load_classifier(self.path, self.data.labels, self.classifier_class)

        def rows(examples: Sequence[dict]) -> list[dict]:
            texts = [e["text"] for e in examples]
            encoded = encode_texts(self.tokenizer, texts, self.query_tokens)
            return [
                {**r, "label": self.label_index(e)} for r, e in zip(encoded, examples, strict=True)
            ]

        train_rows, dev_rows, test_rows = rows(shots), rows(dev), rows(self.data.test)
        dev_gold = torch.tensor([r["label"] for r in dev_rows])

        def dev_accuracy(m: Any) -> float:
            probs = classifier_probs(m, self.tokenizer, dev_rows, self.batch_size)
            return float((probs.argmax(-1) == dev_gold).float().mean())

        loss = classifier_loss(self.tokenizer)
        best = fit(model, train_rows, loss, dev_accuracy, self.settings(seed), new)
        probs = classifier_probs(model, self.tokenizer, test_rows, self.batch_size)
        metrics = classification_metrics(probs, self._gold, bootstrap=self.bootstrap)
        correct = (probs.argmax(-1) == self._gold).int().tolist()
        return {**metrics, **best, "correct": correct}


class AnyLab(Protocol):
    """What the protocol needs of a lab: `Lab` (masked LMs) and `CausalLab` provide it."""

    data: FewShotData

    def supports(self, method: str) -> bool: ...
    def load(self) -> Any: ...
    def zero_shot(self, model: Any) -> dict[str, dict]: ...
    def in_context(self, model: Any, shots: list[dict], seed: int) -> dict[str, dict]: ...
    def head(self, shots: list[dict], dev: list[dict], seed: int) -> dict: ...
    def prompt(
        self, shots: list[dict], dev: list[dict], seed: int, demos: bool, self_train: bool = False
    ) -> dict[str, dict]: ...


def run_protocol(
    lab: AnyLab,
    methods: Sequence[str],
    ks: Sequence[int],
    seeds: Sequence[int],
    prompt_demonstrations: bool = False,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Every requested (method, k, seed); each result row also goes to `on_result` (MLflow)."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise FewShotConfigError(f"fewshot.methods: unknown {unknown}; choose from {METHODS}")
    unsupported = [m for m in methods if not lab.supports(m)]
    if unsupported:
        raise FewShotConfigError(f"fewshot.methods: {unsupported} cannot run on this model")
    results: list[dict] = []

    def record(method: str, k: int, seed: int | None, metrics: dict, start: float) -> None:
        row = {"method": method, "k": k, "seed": seed, **metrics}
        # a lab that computes several rows in one call times each itself (causal prompt rows)
        row.setdefault("seconds", round(time.perf_counter() - start, 2))
        results.append(row)
        log.info(
            "%s k=%d seed=%s accuracy=%.3f (%.0f s)",
            method,
            k,
            seed,
            row["accuracy"],
            row["seconds"],
        )
        if on_result:
            on_result(row)

    if any(m in methods for m in ZERO_SHOT) and 0 in ks:
        start = time.perf_counter()
        for method, metrics in lab.zero_shot(lab.load()).items():
            if method in methods:
                record(method, 0, None, metrics, start)
    base = lab.load() if any(m in methods for m in IN_CONTEXT) else None
    for k in (k for k in ks if k > 0):
        for seed in seeds:
            shots = sample_per_class(lab.data.train, lab.data.labels, k, seed)
            dev = sample_per_class(lab.data.dev_pool, lab.data.labels, k, seed)
            if base is not None:
                start = time.perf_counter()
                for method, metrics in lab.in_context(base, shots, seed).items():
                    if method in methods:
                        record(method, k, seed, metrics, start)
            if "head" in methods:
                start = time.perf_counter()
                record("head", k, seed, lab.head(shots, dev, seed), start)
            if any(m in methods for m in PROMPT):
                # self-training needs prompt fine-tuning's model as its teacher: one call,
                # both rows
                start = time.perf_counter()
                self_train = "prompt_self_training" in methods
                for method, metrics in lab.prompt(
                    shots, dev, seed, prompt_demonstrations, self_train
                ).items():
                    if method in methods:
                        record(method, k, seed, metrics, start)
    return results
