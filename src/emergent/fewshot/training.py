"""Few-shot fine-tuning: prompt-based (LM-BFF / PET) and a classification head, same backbone.

Both train for a fixed number of steps on the k-shot set and keep the weights that score best
on the equally small dev set (true few-shot model selection). Parameters the checkpoint did not
have (a fresh classifier and pooler) get their own learning rate, as in pretraining.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from emergent.fewshot.scoring import mask_logits, pad_prompts
from emergent.models.backbone import load_reporting
from emergent.models.optim import linear_warmup_decay, param_groups
from emergent.models.source import load_pretrained, resolve_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """One fine-tuning run: `fewshot.train` (or `fewshot.causal.train`) and the run's seed.

    No defaults: every value comes from the validated `FewshotTrain` section (schema.py and
    conf/fewshot/ hold them), so a value here can never drift from what the run was given."""

    steps: int
    batch_size: int
    lr: float
    new_params_lr: float
    weight_decay: float
    warmup_ratio: float
    eval_every: int
    seed: int


def fit(
    model: Any,
    rows: Sequence[Any],
    loss_fn: Callable[[Any, Sequence[Any]], torch.Tensor],
    dev_accuracy: Callable[[Any], float],
    settings: TrainSettings,
    new_params: Collection[str] = (),
) -> dict[str, Any]:
    """Train on `rows` for `settings.steps` steps; restore the best dev-accuracy weights.

    Returns {"best_step", "best_dev_accuracy"}; step 0 (untrained) is a candidate too.
    """
    torch.manual_seed(settings.seed)
    # Only what trains is optimised and checkpointed: with LoRA adapters the frozen base (all
    # but ~1% of the weights) is neither copied at every improvement nor given optimizer state.
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    old = [(n, p) for n, p in named if n not in new_params]
    new = [(n, p) for n, p in named if n in new_params]
    optimizer = torch.optim.AdamW(
        param_groups(old, settings.weight_decay, lr=settings.lr)
        + param_groups(new, settings.weight_decay, lr=settings.new_params_lr),
        lr=settings.lr,
    )
    scheduler = linear_warmup_decay(optimizer, settings.steps, settings.warmup_ratio)
    best = {"best_step": 0, "best_dev_accuracy": dev_accuracy(model)}
    best_state = _trainable_state(named)
    rng = random.Random(settings.seed)
    order: list[int] = []
    model.train()
    for step in range(1, settings.steps + 1):
        if len(order) < settings.batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order += more
        batch = [rows[i] for i in order[: settings.batch_size]]
        del order[: settings.batch_size]
        loss = loss_fn(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % settings.eval_every == 0 or step == settings.steps:
            accuracy = dev_accuracy(model)
            model.train()
            if accuracy > best["best_dev_accuracy"]:
                best = {"best_step": step, "best_dev_accuracy": accuracy}
                best_state = _trainable_state(named)
    with torch.no_grad():
        for name, param in named:
            param.copy_(best_state[name])
    model.eval()
    return best


def interpolate_weights(
    base: Any, tuned: Any, shares: Sequence[float], dev_accuracy: Callable[[Any], float]
) -> dict[str, float]:
    """Leave `tuned` at the mix `a * tuned + (1 - a) * base` of the weights whose dev accuracy
    is best among the shares `a` (the first listed wins a tie). Mixing fine-tuned with
    pretrained weights (WiSE-FT, Wortsman et al. 2022) keeps more of what the model knew
    before a few dozen examples pulled it their way. `base` is left as it is."""
    start = dict(base.named_parameters())
    end = {name: param.detach().clone() for name, param in tuned.named_parameters()}
    params = dict(tuned.named_parameters())

    def mix(share: float) -> None:
        with torch.no_grad():
            for name, param in params.items():
                torch.lerp(start[name], end[name], share, out=param)

    scores = {}
    for share in shares:
        mix(share)
        scores[share] = dev_accuracy(tuned)
    chosen = max(scores, key=lambda a: (scores[a], -list(shares).index(a)))
    mix(chosen)
    return {"interpolation": chosen, "interpolated_dev_accuracy": scores[chosen]}


def most_confident(probs: torch.Tensor, per_class: int) -> list[tuple[int, int]]:
    """(row, label) pseudo-labels: for every label in turn, the `per_class` rows predicted as
    it with the highest probability (fewer where fewer are predicted as it), surest first.

    Balanced per label as iPET keeps them: taking the surest rows overall would let the label
    the model already favours crowd out the other in the second fine-tuning."""
    predicted = probs.argmax(-1)
    picked: list[tuple[int, int]] = []
    for label in range(probs.shape[1]):
        rows = (predicted == label).nonzero()[:, 0]
        surest = rows[probs[rows, label].argsort(descending=True, stable=True)[:per_class]]
        picked += [(int(row), label) for row in surest]
    return picked


def _trainable_state(named: Sequence[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in named}


def prompt_loss(word_ids: Sequence[int], tokenizer: Any) -> Callable[[Any, Sequence], torch.Tensor]:
    """Cross-entropy over the label words' logits at [MASK] (rows: encoded prompt + label)."""
    ids = torch.tensor(list(word_ids))

    def loss(model: Any, rows: Sequence[dict[str, Any]]) -> torch.Tensor:
        batch = pad_prompts(tokenizer, rows)
        logits = mask_logits(model, batch)[:, ids]
        return F.cross_entropy(logits.float(), torch.tensor([r["label"] for r in rows]))

    return loss


def load_masked_lm(path: Path) -> Any:
    from transformers import AutoModelForMaskedLM

    return load_pretrained(AutoModelForMaskedLM, resolve_source(path)).train()


def load_classifier(path: Path, labels: Sequence[str], model_class: Any) -> tuple[Any, set[str]]:
    """The task's classification model (`model_class`, an `AutoModelFor...`) on the backbone
    at `path` and the names of its new parameters (classifier, pooler if the checkpoint had
    none)."""
    model, info = load_reporting(
        model_class,
        resolve_source(path),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return model.train(), set(info.get("missing_keys", ()))


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int
) -> list[dict[str, list[int]]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [{"input_ids": ids} for ids in enc["input_ids"]]


def classifier_loss(tokenizer: Any) -> Callable[[Any, Sequence], torch.Tensor]:
    def loss(model: Any, rows: Sequence[dict[str, Any]]) -> torch.Tensor:
        batch = tokenizer.pad({"input_ids": [r["input_ids"] for r in rows]}, return_tensors="pt")
        logits = model(**batch).logits
        return F.cross_entropy(logits.float(), torch.tensor([r["label"] for r in rows]))

    return loss


def classifier_probs(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], batch_size: int = 32
) -> torch.Tensor:
    """Label probabilities of a sequence classifier: [N, labels]."""
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            batch = tokenizer.pad(
                {"input_ids": [r["input_ids"] for r in chunk]}, return_tensors="pt"
            )
            out.append(model(**batch).logits.float().softmax(-1))
    model.train(was_training)
    return torch.cat(out)
