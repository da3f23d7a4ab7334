"""The few-shot protocol on a causal (decoder-only) language model.

Same methods, data, seeds and metrics as the masked-LM lab (`protocol.Lab`), with the label
word predicted after the prompt instead of at a [MASK]:
- zero_shot / zero_shot_calibrated: the next-word distribution over the label words, with
  contextual calibration from content-free inputs;
- in_context: all k demonstrations per class (one seeded order, the same for every query)
  before the query, their key/value cache computed once and reused for every query;
- prompt: prompt-based fine-tuning on the k-shot set (cross-entropy over the label words at
  the last position), through LoRA adapters (peft) or all weights, the best dev-set step kept;
  with `fewshot.prompt_demonstrations`, every training, dev and test prompt starts with its own
  demonstrations drawn from the k-shot set (LM-BFF: the model learns to read them);
- prompt_self_training: the prompt-fine-tuned model labels unlabelled training texts, and a
  fresh copy is prompt-fine-tuned on the k-shot set plus the ones it was surest of (one
  generation of iPET, Schick & Schuetze 2021): the k labels stay the only gold ones.
Head fine-tuning of a causal LM is not part of the lab (the MiniLM head is the baseline).

The backbone is loaded once (de-quantizing a GGUF file takes ~20 s) and kept: LoRA adapters
are removed after each run, full fine-tuning trains a copy.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot import FewShotConfigError
from emergent.fewshot.calibration import calibrate, content_free_prior
from emergent.fewshot.causal import (
    CausalPrompter,
    Prefix,
    label_logprobs,
    last_logits,
)
from emergent.fewshot.demonstrations import demonstrations_for
from emergent.fewshot.metrics import classification_metrics
from emergent.fewshot.training import TrainSettings, fit, interpolate_weights, most_confident
from emergent.models.source import ModelSource, load_pretrained
from emergent.schema import FewshotConfig, FewshotSelfTraining, ModelConfig

CAUSAL_METHODS = (
    "zero_shot",
    "zero_shot_calibrated",
    "in_context",
    "in_context_calibrated",
    "prompt",
    "prompt_self_training",
)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class CausalLab:
    """One causal LM under the protocol (see `protocol.run_protocol`)."""

    source: ModelSource
    key: str  # the model entry's config key, for errors
    prompter: CausalPrompter
    word_ids: tuple[int, ...]
    data: Any  # protocol.FewShotData
    content_free: Sequence[str]
    train: Mapping[str, Any]
    adapter: Literal["lora", "full"] = "lora"
    lora: LoraSettings = LoraSettings()
    demos_per_class: int = 1  # prompt fine-tuning with demonstrations: per label per prompt
    interpolate: tuple[float, ...] = (1.0,)  # weight-space mixes to try on dev (full only)
    self_training: FewshotSelfTraining | None = None  # method prompt_self_training
    batch_size: int = 16
    bootstrap: Bootstrap | None = None
    family: str = "causal"
    _model: Any = field(default=None, init=False, repr=False)
    _gold: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._gold = torch.tensor([self.label_index(e) for e in self.data.test])

    def supports(self, method: str) -> bool:
        return method in CAUSAL_METHODS

    def label_index(self, example: Mapping[str, Any]) -> int:
        return list(self.data.labels).index(str(example["label"]))

    def load(self) -> Any:
        """The backbone, loaded once per lab and kept in eval mode between methods."""
        if self._model is None:
            from transformers import AutoModelForCausalLM

            self._model = load_pretrained(AutoModelForCausalLM, self.source, self.key).eval()
        return self._model

    def release(self) -> None:
        """Drop the weights (the stage moves on to the next backbone)."""
        self._model = None

    @property
    def pad_id(self) -> int:
        tokenizer = self.prompter.tokenizer
        return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.load().parameters())

    # -- prompts and scores ------------------------------------------------------------------
    def _words(self) -> dict[str, str]:
        return {
            label: self.prompter.tokenizer.decode([i]).strip()
            for label, i in zip(self.data.labels, self.word_ids, strict=True)
        }

    def demonstrations(self, shots: Sequence[Mapping[str, Any]], seed: int) -> list[tuple]:
        """Every shot as a (text, label word) demonstration, in one seeded order."""
        words = self._words()
        order = list(shots)
        random.Random(f"demos:{seed}").shuffle(order)
        return [(e["text"], words[str(e["label"])]) for e in order]

    def encode(
        self, examples: Sequence[Mapping[str, Any]], demos: Sequence[tuple] = ()
    ) -> tuple[list[int], list[list[int]]]:
        """(shared prefix ids, per-example query ids) for prompts with these demonstrations."""
        prefix_text = self.prompter.split(demos, "")[0] if demos else ""
        queries = [self.prompter.ids(self.prompter.split(demos, e["text"])[1]) for e in examples]
        return self.prompter.ids(prefix_text), queries

    def score(self, model: Any, queries: Sequence[Sequence[int]], prefix: Prefix | None = None):
        return label_logprobs(model, queries, self.word_ids, self.pad_id, self.batch_size, prefix)

    def metrics(self, logprobs: torch.Tensor, prior: torch.Tensor | None = None) -> dict:
        probs = logprobs.softmax(-1)
        if prior is not None:
            probs = calibrate(probs, prior)
        word = logprobs.gather(1, self._gold[:, None])[:, 0]
        correct = (probs.argmax(-1) == self._gold).int().tolist()
        return {
            **classification_metrics(probs, self._gold, word, self.bootstrap),
            "correct": correct,
        }

    # -- methods -----------------------------------------------------------------------------
    def _with_and_without_prior(
        self, model: Any, demos: Sequence[tuple], names: tuple[str, str]
    ) -> dict[str, dict]:
        """The test prompts scored once, read plainly and with contextual calibration: the
        prior is the label distribution for content-free queries in the same context."""
        prefix_ids, queries = self.encode(self.data.test, demos)
        prefix = Prefix(model, prefix_ids) if prefix_ids else None
        logprobs = self.score(model, queries, prefix)
        free = self.encode([{"text": t} for t in self.free_texts()], demos)[1]
        prior = content_free_prior(self.score(model, free, prefix).softmax(-1))
        plain, calibrated = self.metrics(logprobs), self.metrics(logprobs, prior)
        calibrated["prior"] = [round(float(p), 4) for p in prior]
        if prefix_ids:
            plain["prefix_tokens"] = calibrated["prefix_tokens"] = len(prefix_ids)
        return {names[0]: plain, names[1]: calibrated}

    def zero_shot(self, model: Any) -> dict[str, dict]:
        return self._with_and_without_prior(model, (), ("zero_shot", "zero_shot_calibrated"))

    def free_texts(self) -> list[str]:
        """Content-free inputs; a causal LM has no mask token, so `{mask}` ones are skipped."""
        return [t for t in self.content_free if "{mask}" not in t]

    def in_context(self, model: Any, shots: list[dict], seed: int) -> dict[str, dict]:
        demos = self.demonstrations(shots, seed)
        return self._with_and_without_prior(model, demos, ("in_context", "in_context_calibrated"))

    def head(self, shots: list[dict], dev: list[dict], seed: int) -> dict:
        raise FewShotConfigError(
            f"{self.key}: head fine-tuning runs on masked-LM backbones; remove `head` from this "
            "model's methods (the MiniLM head is the lab's baseline)"
        )

    def prompt(
        self, shots: list[dict], dev: list[dict], seed: int, demos: bool, self_train: bool = False
    ) -> dict[str, dict]:
        """Prompt fine-tuning on the k-shot set ("prompt"); with `self_train`, also one
        generation of self-training ("prompt_self_training"; iPET, Schick & Schuetze 2021):
        the fine-tuned model labels unlabelled training texts, and a fresh copy of the backbone
        is fine-tuned for `self_training.steps` on the k shots plus the texts it was surest of.

        Each row's `seconds` is its own: the teacher's training and test scoring for "prompt";
        labelling the unlabelled texts, the second training and its test scoring for
        "prompt_self_training"."""
        selftrain = self.self_training if self_train else None
        if self_train and selftrain is None:
            raise FewShotConfigError(f"{self.key}: prompt_self_training needs its settings")
        demo_pool = shots if demos else ()
        dev_accuracy = self._dev_accuracy(self._rows(dev, demo_pool, seed + 1))
        test = [r["input_ids"] for r in self._rows(self.data.test, demo_pool, seed)]
        start = time.perf_counter()
        shot_rows = self._rows(shots, demo_pool, seed)
        with self._fine_tuned(shot_rows, dev_accuracy, seed, self.train["steps"]) as (model, best):
            teacher = {**self.metrics(self.score(model, test)), **best}
            teacher["seconds"] = round(time.perf_counter() - start, 2)
            if selftrain:
                start = time.perf_counter()
                unlabelled = self._unlabelled(shots, seed, selftrain.unlabelled)
                # their own labels are never trained on, only used to score the pseudo-labels
                queries = [r["input_ids"] for r in self._rows(unlabelled, demo_pool, seed + 2)]
                surest = self.score(model, queries).softmax(-1)
        out = {"prompt": teacher}
        if selftrain:
            picked = most_confident(surest, selftrain.per_class)
            labels = list(self.data.labels)
            pseudo = [{"text": unlabelled[i]["text"], "label": labels[c]} for i, c in picked]
            hits = sum(labels[c] == unlabelled[i]["label"] for i, c in picked)
            rows = self._rows(shots + pseudo, demo_pool, seed)
            with self._fine_tuned(rows, dev_accuracy, seed, selftrain.steps) as (model, best):
                student = {**self.metrics(self.score(model, test)), **best}
            out["prompt_self_training"] = {
                **student,
                "seconds": round(time.perf_counter() - start, 2),
                "pseudo_labelled": len(pseudo),
                "pseudo_label_accuracy": round(hits / len(pseudo), 4) if pseudo else None,
                "teacher_best_step": teacher["best_step"],
            }
        return out

    @contextmanager
    def _fine_tuned(
        self, rows: Sequence[dict], dev_accuracy: Callable[[Any], float], seed: int, steps: int
    ) -> Iterator[tuple[Any, dict[str, Any]]]:
        """The backbone prompt-fine-tuned on `rows` for `steps` (the best dev step kept), with
        what `fit` reports and its trainable parameter count, for the block to score with; the
        loaded backbone is as it was again when the block ends (LoRA adapters removed)."""
        base = self.load()
        torch.manual_seed(seed)  # LoRA's initial adapters: the same whatever ran before
        model, restore = self._trainable(base)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        try:
            settings = TrainSettings(seed=seed, **{**dict(self.train), "steps": steps})
            # Training runs in float32 whatever the stage's precision: under bf16 autocast the
            # label-word loss drove SmolLM2 to one class within 16 steps (validation 79% ->
            # 60%), in float32 the same recipe learns (docs/results.md).
            with torch.autocast("cpu", enabled=False):
                best = fit(model, rows, self._loss(), dev_accuracy, settings)
                if self.adapter == "full" and self.interpolate != (1.0,):
                    best.update(interpolate_weights(base, model, self.interpolate, dev_accuracy))
            yield model, {**best, "trainable_parameters": trainable}
        finally:
            restore()

    def _unlabelled(self, shots: Sequence[dict], seed: int, size: int) -> list[dict]:
        """`size` texts of the training split, seeded, none of the k-shot set (the dev sets
        come from the validation split)."""
        taken = {id(e) for e in shots}
        rest = [e for e in self.data.train if id(e) not in taken]
        return random.Random(f"unlabelled:{seed}").sample(rest, min(size, len(rest)))

    # -- prompt fine-tuning ------------------------------------------------------------------
    def _trainable(self, base: Any) -> tuple[Any, Callable[[], None]]:
        """The model to train and how to put the base back: LoRA adapters on the base (removed
        afterwards), or a full copy."""
        if self.adapter == "full":
            model = copy.deepcopy(base).train()
            return model, lambda: None
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=self.lora.r,
            lora_alpha=self.lora.alpha,
            lora_dropout=self.lora.dropout,
            target_modules=list(self.lora.target_modules),
            bias="none",
        )
        peft_model = get_peft_model(base, config)
        base.train()

        def restore() -> None:
            peft_model.unload()  # the original modules back, adapters dropped (not merged)
            for p in base.parameters():
                p.requires_grad_(True)
            base.eval()

        return base, restore

    def _rows(
        self, examples: Sequence[Mapping[str, Any]], pool: Sequence[dict] = (), seed: int = 0
    ) -> list[dict[str, Any]]:
        """Whole prompts with their label index. With a `pool` (the k-shot set) each prompt
        starts with its own demonstrations, one seeded draw per example as LM-BFF does: no
        prefix is shared, so none is cached (training changes the weights under it anyway)."""
        if not pool:
            queries = self.encode(examples)[1]
        else:
            rng = random.Random(seed)
            words = self._words()
            queries = []
            for example in examples:
                drawn = demonstrations_for(
                    pool, self.data.labels, self.demos_per_class, rng, example
                )
                demos = [(d["text"], words[str(d["label"])]) for d in drawn]
                prefix, (query,) = self.encode([example], demos)
                queries.append(prefix + query)
        return [
            {"input_ids": q, "label": self.label_index(e)}
            for q, e in zip(queries, examples, strict=True)
        ]

    def _loss(self) -> Callable[[Any, Sequence[dict]], torch.Tensor]:
        ids = torch.tensor(list(self.word_ids))

        def loss(model: Any, rows: Sequence[dict]) -> torch.Tensor:
            logits = last_logits(model, [r["input_ids"] for r in rows], self.pad_id)[:, ids]
            return F.cross_entropy(logits.float(), torch.tensor([r["label"] for r in rows]))

        return loss

    def _dev_accuracy(self, rows: Sequence[dict]) -> Callable[[Any], float]:
        gold = torch.tensor([r["label"] for r in rows])
        queries = [r["input_ids"] for r in rows]
        return lambda m: float((self.score(m, queries).argmax(-1) == gold).float().mean())


def build_causal_lab(
    model_cfg: ModelConfig,
    fcfg: FewshotConfig,
    data: Any,
    bootstrap: Bootstrap | None,
    key: str,
) -> CausalLab:
    """A causal LM preset (`model_cfg`) under the lab's settings (`fewshot.*`).

    Everything that can be wrong in config (source, template, label words) fails here, before
    any run starts; the weights themselves load on first use.
    """
    from emergent.fewshot.causal import CausalTemplate, label_word_ids
    from emergent.models.source import load_source_tokenizer, resolve_source

    task = fcfg.task
    prompt = fcfg.causal_prompts[task]
    source = resolve_source(str(model_cfg.source), key)
    prompter = CausalPrompter(
        tokenizer=load_source_tokenizer(source, key),
        template=CausalTemplate.parse(prompt.template, f"fewshot.causal_prompts.{task}.template"),
        prompting=model_cfg.prompting,
        text_tokens=fcfg.causal.text_tokens,
    )
    word_ids = label_word_ids(
        prompter, prompt.verbalizer, data.labels, f"fewshot.causal_prompts.{task}.verbalizer"
    )
    lora = fcfg.causal.lora
    return CausalLab(
        source=source,
        key=key,
        prompter=prompter,
        word_ids=word_ids,
        data=data,
        content_free=fcfg.content_free,
        train=fcfg.causal.train.model_dump(),
        adapter=fcfg.causal.adapter,
        lora=LoraSettings(lora.r, lora.alpha, lora.dropout, tuple(lora.target_modules)),
        demos_per_class=fcfg.demonstrations.per_class,
        interpolate=tuple(fcfg.causal.interpolate),
        self_training=fcfg.causal.self_training,
        batch_size=fcfg.causal.batch_size,
        bootstrap=bootstrap,
    )
