"""Fine-tuning LightningModule shared by token classification (NER) and sequence
classification (sentiment): the losses, decoding and metrics differ only through `task`."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from emergent.evaluation.predict import decode, score
from emergent.models.optim import linear_warmup_decay, param_groups

HEAD_PREFIXES = ("classifier", "score", "base_model.model.classifier")


def load_task_model(
    task: str, path: str, labels: list[str], overrides: dict[str, Any], init: str = "pretrained"
) -> Any:
    """Token/sequence classification model from `path`, or the same architecture randomly
    initialised (`init=random`, to measure what pretraining buys). Returned in train mode."""
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    cls = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    settings = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        **overrides,
    }
    if init == "random":
        model = cls.from_config(AutoConfig.from_pretrained(path, **settings))
    elif init == "pretrained":
        model = cls.from_pretrained(path, **settings)
    else:
        raise ValueError(f"finetune.init must be 'pretrained' or 'random', got {init!r}")
    return model.train()


def apply_lora(task: str, model: Any, lora_cfg: dict[str, Any]) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS if task == "ner" else TaskType.SEQ_CLS,
        r=int(lora_cfg["r"]),
        lora_alpha=int(lora_cfg["alpha"]),
        lora_dropout=float(lora_cfg["dropout"]),
        target_modules=list(lora_cfg["target_modules"]),
    )
    return get_peft_model(model, config)


def mergeable(model: Any) -> Any:
    """The plain HF model to save: LoRA adapters merged into the weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


class TaskModule(L.LightningModule):
    def __init__(
        self,
        model: Any,
        task: str,
        labels: list[str],
        optimizer: dict[str, Any],
        lr: float,
        weight_decay: float,
        warmup_ratio: float,
        total_steps: int,
        head_lr: float | None = None,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.labels = labels
        self.optimizer_cfg = optimizer
        self.save_hyperparameters(ignore=["model", "class_weights", "optimizer"])
        self.register_buffer("class_weights", class_weights, persistent=False)
        self._gold: list[list[int]] = []
        self._pred: list[list[int]] = []
        self._val_loss: list[float] = []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            weight=self.class_weights,
            ignore_index=-100,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch["labels"])
        self.log(
            "train_loss",
            loss,
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=len(batch["labels"]),
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._gold, self._pred, self._val_loss = [], [], []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch)
        self._val_loss.append(float(self.loss(logits, batch["labels"])))
        gold, pred, _ = decode(self.task, logits, batch)
        self._gold += gold
        self._pred += pred

    def on_validation_epoch_end(self) -> None:
        if not self._gold:
            return
        metrics = score(self.task, self.labels, self._gold, self._pred)
        self.log_dict(
            {
                "val_loss": sum(self._val_loss) / len(self._val_loss),
                "val_f1": metrics["headline"],
                "val_accuracy": metrics["accuracy"],
            },
            prog_bar=True,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        head = [
            (n, p)
            for n, p in self.model.named_parameters()
            if n.startswith(HEAD_PREFIXES) or ".classifier." in n
        ]
        head_ids = {id(p) for _, p in head}
        body = [(n, p) for n, p in self.model.named_parameters() if id(p) not in head_ids]
        groups = param_groups(body, hp.weight_decay, hp.lr, include_frozen=True)
        groups += param_groups(head, hp.weight_decay, hp.head_lr or hp.lr, include_frozen=True)
        optimizer = instantiate(
            self.optimizer_cfg,
            params=groups,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            _convert_="all",
        )
        scheduler = linear_warmup_decay(optimizer, hp.total_steps, hp.warmup_ratio)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class BestWeights(Callback):
    """Keeps the weights of the best validation score in memory and restores them at the end."""

    def __init__(self, monitor: str = "val_f1") -> None:
        self.monitor = monitor
        self.best: float | None = None
        self.best_step = 0
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.sanity_checking:
            return
        if self.best is None or float(value) > self.best:
            self.best = float(value)
            self.best_step = trainer.global_step
            self.state = copy.deepcopy(pl_module.model.state_dict())

    def restore(self, pl_module: L.LightningModule) -> None:
        if self.state is not None:
            pl_module.model.load_state_dict(self.state)


def load_finetuned(task: str, model_dir: Any) -> tuple[Any, Any, list[str]]:
    """A fine-tuned task model (eval mode), its tokenizer and its labels from `models/{task}/`."""
    import json
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from emergent.models.backbone import load_tokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "labels.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no fine-tuned model: run finetune@{task} first")
    cls = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    labels = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    return cls.from_pretrained(str(model_dir)).eval(), load_tokenizer(model_dir), labels
