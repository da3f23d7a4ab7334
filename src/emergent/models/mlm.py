"""LightningModule for masked-language-model pretraining of a `BertForMaskedLM`.

A sentence-encoder checkpoint (the packaged MiniLM) has no MLM head. Its decoder is tied to the
word embeddings, so only the head's transform (dense + LayerNorm) and output bias are new: those
get their own (higher) learning rate, an optional head-only warm-up with the encoder frozen, and
an output bias started at the corpus' log unigram frequencies instead of zeros.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from emergent.io import atomic_dir
from emergent.models.backbone import backbone_dir, count_parameters, load_mlm_model
from emergent.models.optim import linear_warmup_decay, param_groups
from emergent.models.pooling import carry_pooling
from emergent.schema import ModelConfig, PretrainHead, Settings

log = logging.getLogger(__name__)


def tie_decoder(model: Any) -> None:
    """Make sure the MLM decoder weight IS the input embedding matrix (BERT's tying).

    transformers ties them when `config.tie_word_embeddings` holds; a config that says
    otherwise would leave a randomly initialised vocab x hidden decoder to learn from scratch.
    """
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        return
    log.warning("MLM decoder was not tied to the word embeddings: tying it")
    model.config.tie_word_embeddings = True
    model.get_output_embeddings().weight = model.get_input_embeddings().weight


def head_parameter_names(model: Any) -> set[str]:
    """Names of the MLM head's own parameters (transform and bias; the tied decoder weight is
    the embedding matrix and is listed under the encoder)."""
    return {name for name, _ in model.named_parameters() if name.startswith("cls.")}


def init_output_bias(model: Any, token_ids: torch.Tensor, special_ids: Collection[int]) -> None:
    """Start the decoder bias at log unigram frequencies of `token_ids` (add-one smoothed).

    A zero bias makes the untrained head predict rare and frequent tokens alike; the unigram
    prior is what the bias learns first anyway, so this skips those steps.
    """
    bias = model.get_output_embeddings().bias
    counts = torch.bincount(token_ids.flatten(), minlength=bias.numel())[: bias.numel()].float()
    counts[list(special_ids)] = 0.0
    with torch.no_grad():
        bias.copy_(torch.log((counts + 1.0) / (counts.sum() + bias.numel())))


def set_dropout(model: Any, p: float) -> None:
    """Set every dropout module of `model` to `p`, leaving `model.config` as it is.

    Continued pretraining sees each block about once within its budget, so dropout only adds
    noise there (Geiping & Goldstein 2022, "Cramming"); the saved config keeps the model's own
    rates, so whoever loads the checkpoint later (fine-tuning, the few-shot lab) trains with them.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = float(p)


def masked_lm_loss(
    model: Any, batch: dict[str, torch.Tensor], freeze_encoder: bool = False
) -> tuple[torch.Tensor, dict]:
    """MLM loss computed only at masked positions.

    The vocabulary projection is applied to the ~15% masked hidden states instead of every
    position: on a CPU that head (hidden x vocab) would otherwise dominate the step time.
    `freeze_encoder` runs the encoder without autograd (head-only warm-up: ~3x cheaper steps).
    Returns the mean loss and sums for exact aggregation (loss sum, correct, count).
    """
    labels = batch["labels"]
    with torch.set_grad_enabled(torch.is_grad_enabled() and not freeze_encoder):
        hidden = model.bert(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    selected = labels.ne(-100)
    logits = model.cls(hidden[selected])
    targets = labels[selected]
    loss_sum = F.cross_entropy(logits.float(), targets, reduction="sum")
    count = targets.numel()
    correct = (logits.argmax(-1) == targets).sum()
    return loss_sum / max(count, 1), {
        "loss_sum": loss_sum.detach(),
        "correct": correct,
        "count": count,
    }


class MaskedLMModule(L.LightningModule):
    def __init__(
        self,
        model: Any,
        lr: float = 5e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_ratio: float = 0.06,
        total_steps: int = 1000,
        head_params: Collection[str] = (),
        head_lr: float | None = None,
        head_warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters(ignore=["model", "head_params"])
        self.head_params = set(head_params)
        # Typed copies of what save_hyperparameters records (Lightning's `hparams` is an
        # untyped mapping); the steps and the optimizer read these.
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = (float(betas[0]), float(betas[1]))  # a list when read from YAML
        self.eps = eps
        self.warmup_ratio = warmup_ratio
        self.total_steps = total_steps
        self.head_lr = head_lr
        self.head_warmup_steps = head_warmup_steps
        self._val: dict[str, float] = {}
        self._tokens = 0
        self._train_time = 0.0
        self._step_start: float | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_lm_loss(self.model, batch)[0]

    # Throughput: wall time of training steps only (validation excluded).
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        frozen = self.global_step < self.head_warmup_steps
        loss, _ = masked_lm_loss(self.model, batch, freeze_encoder=frozen)
        self._tokens += int(batch["attention_mask"].sum())
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_start is not None:
            self._train_time += time.perf_counter() - self._step_start
        if self._train_time > 0:
            self.log("tok_s", self._tokens / self._train_time, prog_bar=True, on_step=True)
        scheduler = self.lr_schedulers()  # the one configured below (a LambdaLR)
        if isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
            self.log("lr", scheduler.get_last_lr()[0], on_step=True)

    @property
    def tokens_per_second(self) -> float:
        return self._tokens / self._train_time if self._train_time else 0.0

    def on_validation_epoch_start(self) -> None:
        self._val = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, stats = masked_lm_loss(self.model, batch)
        for key in self._val:
            self._val[key] += float(stats[key])

    def on_validation_epoch_end(self) -> None:
        totals = torch.tensor(
            [self._val["loss_sum"], self._val["correct"], self._val["count"]], device=self.device
        )
        totals = (
            self.trainer.strategy.all_gather(totals).reshape(-1, 3).sum(0)
            if self.trainer.world_size > 1
            else totals
        )
        loss_sum, correct, count = (float(x) for x in totals)
        val_loss = loss_sum / max(count, 1.0)
        self.log_dict(
            {
                "val_loss": val_loss,
                "perplexity": math.exp(min(val_loss, 50.0)),
                "masked_accuracy": correct / max(count, 1.0),
            },
            prog_bar=True,
            rank_zero_only=True,
        )

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        named = list(self.model.named_parameters())
        encoder = [(n, p) for n, p in named if n not in self.head_params]
        head = [(n, p) for n, p in named if n in self.head_params]
        optimizer = torch.optim.AdamW(
            param_groups(encoder, self.weight_decay)
            + param_groups(head, self.weight_decay, lr=self.head_lr or self.lr),
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
        )
        scheduler = linear_warmup_decay(optimizer, self.total_steps, self.warmup_ratio)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def build_mlm(
    settings: Settings, tokenizer: Any, train_blocks: torch.Tensor | None, max_steps: int
) -> tuple[Any, MaskedLMModule, dict[str, int]]:
    """The masked LM `model` and `pretrain` configure (decoder tied, dropout, the output bias
    from the corpus' unigrams, the new head's own learning rate and warm-up), its Lightning
    module over `max_steps`, and its parameter counts."""
    pcfg = settings.pretrain
    head = pcfg.head or PretrainHead()  # null: the head's defaults
    model = load_mlm_model(settings.model, tokenizer)
    tie_decoder(model)
    if pcfg.dropout is not None:  # null: the model's own rates
        set_dropout(model, pcfg.dropout)
    if head.init_bias == "unigram":
        assert train_blocks is not None
        init_output_bias(model, train_blocks, tokenizer.all_special_ids)
    # Only a pretrained encoder has an old body and a new head; from scratch all is new.
    new_head = head_parameter_names(model) if settings.model.pretrained else set()
    betas = pcfg.optimizer.betas  # two values (the schema checks)
    module = MaskedLMModule(
        model,
        lr=pcfg.optimizer.lr,
        weight_decay=pcfg.optimizer.weight_decay,
        betas=(betas[0], betas[1]),
        eps=pcfg.optimizer.eps,
        warmup_ratio=pcfg.warmup_ratio,
        total_steps=max(max_steps, 1),
        head_params=new_head,
        head_lr=head.lr,
        head_warmup_steps=head.warmup_steps if new_head else 0,
    )
    return model, module, count_parameters(model)


def pretrain_metrics(
    final: Mapping[str, float],
    module: MaskedLMModule,
    trainer: L.Trainer,
    train_seconds: float,
    resumed_from: int,
    counts: dict[str, int],
    skipped: bool,
) -> dict[str, Any]:
    """metrics/pretrain.json: the final validation, throughput, steps and size (`skipped`:
    `pretrain.max_steps=0`, the initialised MLM saved untrained)."""
    return {
        "skipped": skipped,
        "val_loss": float(final["val_loss"]),
        "perplexity": float(final["perplexity"]),
        "masked_accuracy": float(final["masked_accuracy"]),
        "tokens_per_second": module.tokens_per_second * trainer.world_size,
        "train_seconds": train_seconds,
        "global_step": int(trainer.global_step),
        "resumed_from_step": resumed_from,
        "steps_this_run": int(trainer.global_step) - resumed_from,
        "params_total": counts["total"],
        "params_trainable": counts["trainable"],
    }


def save_pretrained(
    folder: Path, model: Any, tokenizer: Any, model_cfg: ModelConfig, snapshots: Path | None
) -> None:
    """`models/pretrained/`: the model and tokenizer, the backbone's pooling config (for
    `pooling=auto`) and the kept snapshots, each with the tokenizer."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if model_cfg.source:
            carry_pooling(backbone_dir(model_cfg), tmp)
        if snapshots is not None:
            shutil.copytree(snapshots, tmp / "snapshots")
            for snapshot in (tmp / "snapshots").iterdir():
                tokenizer.save_pretrained(str(snapshot))
