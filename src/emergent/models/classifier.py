"""Fine-tuning LightningModule for any task: the task supplies the model class, decoding and
metrics, so this module holds only the training loop's parts (loss, gathering, optimizer)."""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from emergent.errors import ConfigError
from emergent.models.backbone import from_pretrained_logged
from emergent.models.crf import TagTransitions
from emergent.models.optim import layerwise_param_groups, param_groups
from emergent.models.pooling import POOLING_KEY, pooled_class, resolve_pooling
from emergent.schema import FinetuneShared, Lora
from emergent.tasks import Task
from emergent.tasks.base import RowOutput, softmax
from emergent.tasks.decoding import CONFIG_KEY as SCORES_KEY
from emergent.tasks.shapes import CONFIG_KEY as SHAPES_KEY
from emergent.tasks.shapes import N_SHAPES, model_inputs, uses_shapes

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("classifier", "score", "base_model.model.classifier", "base_model.model.score")


def load_task_model(
    task: Task,
    path: str,
    labels: list[str],
    overrides: dict[str, Any],
    init: str = "pretrained",
    pooling: str = "cls",
    word_shapes: bool = False,
    causal: bool = False,
) -> Any:
    """The task's model from `path`, or the same architecture randomly initialised
    (`init=random`, to measure what pretraining buys). Returned in train mode.

    `pooling` (tasks that pool one vector per text): `cls`, `mean` or `auto` (the backbone's
    own, `emergent.models.pooling`); recorded in the model's config as `classifier_pooling`.
    `word_shapes`: the model reads each word's shape (`enable_word_shapes`).
    `causal`: the backbone is a causal LM (`model.family=causal`): transformers' own sequence
    classifier for it (e.g. LlamaForSequenceClassification, which classifies from the last
    non-pad token's state, the only one that has read the whole text)."""
    from transformers import AutoConfig

    if causal:
        check_causal(task, pooling)
    cls = task.model_class()
    settings = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        **overrides,
    }
    if init not in ("random", "pretrained"):
        raise ConfigError("finetune.init", f"must be 'pretrained' or 'random', got {init!r}")
    config = AutoConfig.from_pretrained(path, **settings)
    if causal and config.pad_token_id is None:
        raise ConfigError(
            "model.source",
            f"{path}: the causal LM's config has no pad_token_id to find the last real token by",
        )
    if task.pools and not causal:
        setattr(config, POOLING_KEY, resolve_pooling(pooling, path))
        cls = pooled_class(cls, config)
        log.info("%s: %s pooling", task.name, getattr(config, POOLING_KEY))
    if init == "random":
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    else:
        model = from_pretrained_logged(cls, path, config=config)
    if word_shapes:
        enable_word_shapes(model)
    return model.train()


def check_causal(task: Task, pooling: str) -> None:
    """Refuse what a causal backbone cannot do, one line naming the key: a per-token task (a
    left-to-right LM sees no right context for a token's label) and a pooling other than the
    model's own (the project's `[CLS]`/mean wrappers are BERT classes)."""
    if not task.pools:
        raise ConfigError(
            "model.family",
            f"causal backbones are for tasks that classify whole texts; finetune@{task.name} "
            f"is {task.kind}, which needs each token's right context: use a masked "
            "(BERT-style) model preset",
        )
    if pooling != "auto":
        raise ConfigError(
            f"finetune.{task.name}.pooling",
            f"must be auto with a causal backbone (it classifies from its last token), "
            f"got {pooling!r}",
        )


def enable_word_shapes(model: Any) -> Any:
    """Give the model a learned embedding per word shape (`emergent.tasks.shapes`): BERT's
    token-type table grows to one row per shape, each starting as the segment-0 row every
    input uses now, so training starts from the model as it was; the config records it
    (`word_shapes`, `type_vocab_size`), so `from_pretrained` rebuilds it from the folder."""
    embeddings = model.base_model.embeddings
    old = embeddings.token_type_embeddings
    if old.num_embeddings >= N_SHAPES and uses_shapes(model.config):
        return model
    new = torch.nn.Embedding(N_SHAPES, old.embedding_dim).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[0].expand(N_SHAPES, -1))
    embeddings.token_type_embeddings = new
    model.config.type_vocab_size = N_SHAPES
    setattr(model.config, SHAPES_KEY, True)
    return model


def apply_lora(task: Task, model: Any, lora: Lora) -> Any:
    """LoRA adapters on `lora.target_modules` (BERT: query, value; Llama: q_proj, v_proj);
    names that match no module of this backbone are one line naming the key."""
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils.error import NoMatchingPeftModuleError

    config = LoraConfig(
        task_type=getattr(TaskType, task.lora_task_type),
        r=lora.r,
        lora_alpha=int(lora.alpha),  # peft takes an int
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    try:
        return get_peft_model(model, config)
    except NoMatchingPeftModuleError:
        leaves = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if not list(m.children())}
        raise ConfigError(
            f"finetune.{task.name}.lora.target_modules",
            f"{lora.target_modules} match no module of this "
            f"{model.config.model_type} backbone (its layers: {', '.join(sorted(leaves))})",
        ) from None


def mergeable(model: Any) -> Any:
    """The plain HF model to save: LoRA adapters merged into the weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def gather_outputs(outputs: dict[int, RowOutput]) -> dict[int, RowOutput]:
    """Every process's row outputs, merged by row id (the distributed sampler repeats a few
    rows to even out the shards: the same row id then carries the same prediction)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return outputs
    shards: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, outputs)
    merged: dict[int, RowOutput] = {}
    for shard in shards:
        merged.update(shard)
    return merged


@runtime_checkable
class ValidationData(Protocol):
    """What validation reads of the trainer's data module (the task's `TaskDataModule`): each
    split's encoded rows (indexed by a batch's `row` ids) and its prepared examples."""

    encoded: dict[str, list[dict[str, Any]]]
    raw: dict[str, list[dict]]


class TaskModule(L.LightningModule):
    """Loss, validation metrics gathered across processes, optimizer and schedule.

    Validation metrics are the task's own (`task.evaluate`) over the whole validation set:
    predictions of every process are gathered before scoring, so early stopping and best-weight
    selection see all the data under DDP. Logged as `val_<metric>` (the headline among them).

    With `crf` (tasks whose labels form a chain) the loss is a CRF's sentence log-likelihood
    and the learned transition scores (`emergent.models.crf`) join decoding; they start from
    the model config's (a fine-tuned model's, e.g. in the export's recovery fine-tune) or at
    zero, train at `crf_lr` (0: kept fixed) and are written back into the config
    (`sync_tag_scores`), which is saved with the model.
    """

    class_weights: torch.Tensor | None  # a buffer (register_buffer), so it follows the device

    def __init__(
        self,
        model: Any,
        task: Task,
        labels: list[str],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
        total_steps: int,
        head_lr: float | None = None,
        class_weights: torch.Tensor | None = None,
        layer_lr_decay: float = 1.0,
        crf: bool = False,
        crf_lr: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.labels = labels
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        # Typed copies of what save_hyperparameters records (Lightning's `hparams` is an
        # untyped mapping); the optimizer and schedule read these.
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.total_steps = total_steps
        self.head_lr = head_lr
        self.layer_lr_decay = layer_lr_decay
        self.crf_lr = crf_lr
        self.save_hyperparameters(
            # `teacher`: DistilledTaskModule's (Lightning reads the subclass's arguments too);
            # a module, not a hyperparameter
            ignore=["model", "task", "class_weights", "optimizer", "scheduler", "teacher"]
        )
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._outputs: dict[int, RowOutput] = {}
        self.last_scored_rows: list[int] = []  # rows scored in the last validation (all ranks)
        self.real_tokens = 0
        self.padded_tokens = 0
        self.tag_transitions: TagTransitions | None = None
        if crf:
            saved = getattr(model.config, SCORES_KEY, None)
            self.tag_transitions = TagTransitions(len(labels), saved)
            self.tag_transitions.requires_grad_(crf_lr > 0)

    def sync_tag_scores(self) -> None:
        """Write the learned transition scores into the model's config (saved with it)."""
        if self.tag_transitions is not None:
            setattr(self.model.config, SCORES_KEY, self.tag_transitions.as_dict())

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**model_inputs(self.model.config, batch)).logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.tag_transitions is not None:
            return self.tag_transitions.nll(logits, labels)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            weight=self.class_weights,
            ignore_index=-100,
        )

    def training_loss(
        self, batch: dict[str, torch.Tensor], logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to train on and any parts of it worth logging (subclasses add terms)."""
        return self.loss(logits, batch["labels"]), {}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        mask = batch["attention_mask"]
        self.real_tokens += int(mask.sum())
        self.padded_tokens += int(mask.numel())
        loss, parts = self.training_loss(batch, self(batch))
        self.log_dict(
            {"train_loss": loss, **parts},
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=len(mask),
        )
        return loss

    @property
    def padding_share(self) -> float:
        """Share of processed token positions that were padding (this process)."""
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def on_validation_epoch_start(self) -> None:
        self._outputs = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self.log(
            "val_loss",
            self.loss(logits, batch["labels"]),
            batch_size=len(batch["labels"]),
            sync_dist=True,
        )
        probs = softmax(logits.detach().float().cpu().numpy().astype(np.float64))
        rows = self.data.encoded["validation"]
        for j, r in enumerate(batch["row"].tolist()):
            self._outputs[r] = self.task.row_output(probs[j], rows[r])

    def on_validation_epoch_end(self) -> None:
        outputs = gather_outputs(self._outputs)
        data = self.data
        rows, examples = data.encoded["validation"], data.raw["validation"]
        if len(outputs) < len(rows):  # a partial validation (limit_val_batches) is not scored
            return
        self.last_scored_rows = sorted(outputs)
        self.sync_tag_scores()
        task = self.task.for_model(self.model.config)  # with the scores learned so far
        pred, conf = task.assemble(examples, self.labels, outputs, rows)
        metrics = task.evaluate(examples, self.labels, pred, conf).metrics
        # Every process holds the same gathered metrics, so no further reduction is needed.
        headline = self.task.headline.metric
        self.log_dict({f"val_{k}": float(v) for k, v in metrics.items() if k != headline})
        self.log(f"val_{headline}", float(metrics[headline]), prog_bar=True)

    @property
    def data(self) -> ValidationData:
        """The data module the trainer runs on: validation scores its encoded rows by id."""
        data = getattr(self.trainer, "datamodule", None)
        if not isinstance(data, ValidationData):
            raise TypeError(
                f"{type(self).__name__} validates on a task's data module "
                f"(trainer.fit(module, datamodule=...)), got {type(data).__name__}"
            )
        return data

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        head = [
            (n, p)
            for n, p in self.model.named_parameters()
            if n.startswith(HEAD_PREFIXES) or ".classifier." in n
        ]
        head_ids = {id(p) for _, p in head}
        body = [(n, p) for n, p in self.model.named_parameters() if id(p) not in head_ids]
        groups = layerwise_param_groups(
            body,
            self.weight_decay,
            self.lr,
            self.layer_lr_decay,
            int(self.model.config.num_hidden_layers),
            include_frozen=True,
        )
        groups += param_groups(
            head, self.weight_decay, self.head_lr or self.lr, include_frozen=True
        )
        if self.tag_transitions is not None and self.crf_lr > 0:
            scores = list(self.tag_transitions.parameters())
            groups.append({"params": scores, "weight_decay": 0.0, "lr": self.crf_lr})
        optimizer_cfg = dict(self.optimizer_cfg)
        # `fused`: a keyword argument of some optimizers, set only where wanted (open section)
        if optimizer_cfg.get("fused") and self._loss_scaler() is not None:
            # A fused optimizer unscales fp16 gradients inside its step, after clipping would
            # have seen them scaled: Lightning refuses the pair, so fp16 gets the plain loop.
            log.info("fp16 loss scaling: the optimizer runs unfused so gradients can be clipped")
            optimizer_cfg["fused"] = False
        optimizer = instantiate(
            optimizer_cfg,
            params=groups,
            lr=self.lr,
            weight_decay=self.weight_decay,
            _convert_="all",
        )
        scheduler = instantiate(
            self.scheduler_cfg,
            optimizer=optimizer,
            num_warmup_steps=int(self.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _loss_scaler(self) -> Any:
        """The fp16 gradient scaler of the precision plugin (None under bf16 and fp32)."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip exactly as Lightning does, also for a fused optimizer under bf16 or fp32.

        Lightning's mixed-precision plugin refuses to clip for any optimizer that could unscale
        gradients itself (fused AdamW), a guard that only matters with an fp16 loss scaler:
        without one, the base plugin's clipping (the same `clip_grad_norm_` over the
        optimizer's parameters) is what would have run.
        """
        if self._loss_scaler() is not None:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
            return
        Precision.clip_gradients(
            self.trainer.precision_plugin,
            optimizer,
            float(gradient_clip_val or 0.0),
            GradClipAlgorithmType(gradient_clip_algorithm or "norm"),
        )


def task_module(
    fcfg: FinetuneShared,
    model: Any,
    task: Task,
    labels: list[str],
    total_steps: int,
    class_weights: Any = None,
    module_class: type[TaskModule] | None = None,
    **extra: Any,
) -> Any:
    """The TaskModule (or a subclass, given its `extra` arguments) with the fine-tuning
    configuration's optimizer, schedule and rates. `extra` may override `crf_lr` (the export's
    recovery keeps the fine-tuned transition scores fixed with 0)."""
    crf = fcfg.crf
    if crf and not task.learns_transitions:
        raise ConfigError(
            f"finetune.{task.name}.crf", f"a {task.kind} task has no chain of labels for a CRF"
        )
    if crf and class_weights is not None:
        raise ConfigError(
            f"finetune.{task.name}.class_weights", "cannot be combined with crf (a sequence loss)"
        )
    extra = {"crf": crf, "crf_lr": fcfg.crf_lr, **extra}
    return (module_class or TaskModule)(
        model,
        task,
        labels,
        # Hydra targets: `_target_` and its keyword arguments, instantiated when training starts
        optimizer=fcfg.optimizer.model_dump(by_alias=True),
        scheduler=fcfg.scheduler.model_dump(by_alias=True),
        lr=fcfg.lr,
        head_lr=fcfg.head_lr,
        layer_lr_decay=fcfg.layer_lr_decay,
        weight_decay=fcfg.weight_decay,
        warmup_ratio=fcfg.warmup_ratio,
        total_steps=total_steps,
        class_weights=class_weights,
        **extra,
    )
