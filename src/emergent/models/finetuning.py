"""What `finetune.<task>` makes of the pretrained backbone: the task model (dropout, word
shapes, freezing, LoRA), the Lightning module with its step budget, the callbacks that watch
the task's headline, the best weights back, and the run's `TrainingSummary`.

The finetune stage reads the config and writes the model folder; everything between is here,
so `tune`, `seeds` and the benchmarks (which run that stage) and the stage agree by
construction.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ThroughputMonitor

from emergent.errors import ConfigError, StageError
from emergent.models.averaging import ExponentialMovingAverage
from emergent.models.backbone import count_parameters, is_causal, lowercases
from emergent.models.classifier import (
    TaskModule,
    apply_lora,
    check_causal,
    load_task_model,
    mergeable,
    task_module,
)
from emergent.models.freezing import GradualUnfreezing, freeze
from emergent.models.pooling import POOLING_KEY
from emergent.models.summary import TrainingSummary
from emergent.schema import FinetuneShared, ModelConfig
from emergent.tasks import Task
from emergent.tasks.shapes import uses_shapes

log = logging.getLogger(__name__)


def check_backbone(
    model_cfg: ModelConfig, fcfg: FinetuneShared, task: Task, pretrained: Path
) -> bool:
    """Whether the backbone is a causal LM, after checking there is one in `pretrained` and,
    for a causal LM, that it can do this task (before any data is encoded)."""
    config = pretrained / "config.json"
    if not config.is_file():
        raise StageError(f"{pretrained} has no model: run the pretrain stage first")
    causal = is_causal(model_cfg)
    made_as = json.loads(config.read_text(encoding="utf-8")).get("architectures") or [""]
    wrong = "ForMaskedLM" if causal else "ForCausalLM"
    if made_as[0].endswith(wrong):
        # e.g. a CLI run of finetune with `experiment=sentiment_smollm2` in a fresh run folder
        # reads the project's MiniLM; training a Llama classifier on it would fail deep inside
        raise ConfigError(
            "model.family",
            f"{model_cfg.family}, but {pretrained} holds a {made_as[0]} from another model "
            "preset: run the tokenizer and pretrain stages with this one first, into the same "
            "hydra.run.dir",
        )
    if causal:
        check_causal(task, fcfg.pooling)
    return causal


def dropout_overrides(fcfg: FinetuneShared, causal: bool = False) -> dict[str, Any]:
    """The config overrides for `finetune.<task>.dropout`: BERT's three rates, or a causal
    LM's (Llama has attention dropout only; its score head has none)."""
    if causal:
        return {"attention_dropout": fcfg.dropout.attention}
    return {
        "hidden_dropout_prob": fcfg.dropout.hidden,
        "attention_probs_dropout_prob": fcfg.dropout.attention,
        "classifier_dropout": fcfg.dropout.classifier,
    }


def word_shapes(fcfg: FinetuneShared, task: Task, tokenizer: Any) -> bool:
    """`finetune.<task>.word_shapes` made concrete: `auto` is on for word-level tasks whose
    tokenizer lower-cases (the case they lose comes back as word shapes)."""
    setting = fcfg.word_shapes  # the schema admits auto, true or false
    if setting == "auto":
        return bool(task.reads_shapes and lowercases(tokenizer))
    if setting and not task.reads_shapes:
        raise ConfigError(
            f"finetune.{task.name}.word_shapes", f"{task.kind} tasks do not read word shapes"
        )
    return bool(setting)


def real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens of a batch (what ThroughputMonitor counts as items)."""
    return int(batch["attention_mask"].sum())


@dataclass
class TaskModel:
    """The model to train, which tensors were frozen and its parameter counts."""

    model: Any
    frozen: list[str]
    counts: dict[str, int]


def build_task_model(
    fcfg: FinetuneShared,
    task: Task,
    pretrained: Path,
    tokenizer: Any,
    labels: list[str],
    causal: bool,
) -> TaskModel:
    """The task model on the pretrained backbone, with the configured dropout, pooling, word
    shapes, frozen parts and strategy (`full` or `lora`)."""
    overrides = dropout_overrides(fcfg, causal)
    if causal:  # the classifier finds each text's last token by the padding id
        overrides["pad_token_id"] = tokenizer.pad_token_id
    model = load_task_model(
        task,
        str(pretrained),
        labels,
        overrides,
        init=fcfg.init,
        pooling=fcfg.pooling,
        word_shapes=word_shapes(fcfg, task, tokenizer),
        causal=causal,
    )
    frozen = freeze(
        model,
        embeddings=fcfg.freeze.embeddings,
        layers=fcfg.freeze.layers,
        encoder=fcfg.freeze.encoder,
    )
    if fcfg.strategy == "lora":  # the schema admits full or lora
        model = apply_lora(task, model, fcfg.lora)
    counts = count_parameters(model)
    log.info(
        "%s: %d/%d parameters trainable (%d frozen tensors)",
        task.name,
        counts["trainable"],
        counts["total"],
        len(frozen),
    )
    return TaskModel(model, frozen, counts)


def total_steps(fcfg: FinetuneShared, train_rows: int, world: int) -> int:
    """The optimizer steps the schedule spans: `max_steps`, else the epochs' batches (per
    process: each of `world` processes sees its share of every batch; a fractional last
    epoch rounded up to a whole batch)."""
    batches = math.ceil(train_rows / (fcfg.batch_size * world))
    if fcfg.limit_train_batches:
        batches = min(batches, fcfg.limit_train_batches)
    max_steps = fcfg.max_steps or -1
    return max_steps if max_steps > 0 else math.ceil(batches * fcfg.max_epochs)


def build_module(
    fcfg: FinetuneShared, task: Task, built: TaskModel, datamodule: Any, world: int
) -> TaskModule:
    """The Lightning module for `built`, its schedule sized to the run."""
    steps = total_steps(fcfg, len(datamodule.encoded["train"]), world)
    return task_module(
        fcfg,
        built.model,
        task,
        datamodule.labels,
        steps,
        class_weights=datamodule.class_weights() if fcfg.class_weights else None,
    )


def callbacks(fcfg: FinetuneShared, task: Task, ckpt_dir: Any) -> dict[str, Any]:
    """The configured callbacks (Hydra targets), watching the task's headline metric."""
    watch = {"monitor": f"val_{task.headline.metric}", "mode": task.headline.mode}
    early_stopping = fcfg.callbacks.early_stopping.model_dump(by_alias=True)
    best_weights = fcfg.callbacks.best_weights.model_dump(by_alias=True)
    built = {
        "early_stopping": instantiate(early_stopping, **watch),
        "best_weights": instantiate(best_weights, **watch, dirpath=str(ckpt_dir)),
        "throughput": ThroughputMonitor(
            batch_size_fn=lambda b: len(b["input_ids"]), length_fn=real_tokens
        ),
    }
    if fcfg.freeze.unfreeze_at_epoch is not None:
        built["unfreeze"] = GradualUnfreezing(fcfg.freeze.unfreeze_at_epoch)
    if fcfg.ema_decay:  # the schema keeps it in [0, 1); 0: no averaging
        built["ema"] = ExponentialMovingAverage(fcfg.ema_decay)
    return built


def restore_best(module: TaskModule, best_weights: Any) -> None:
    """Load the best checkpoint's weights (when one was written) and put the best weights'
    transition scores into the model config."""
    if best_weights.best_model_path:
        state = torch.load(best_weights.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    module.sync_tag_scores()


def best_validation(
    validation: Sequence[Mapping[str, float]], task: Task
) -> tuple[float | None, int | None]:
    """The best validation headline and its step (ties: the earliest); (None, None) without
    validation. Read from the history, so it is known also when no checkpoint is kept
    (`callbacks.best_weights.save_top_k: 0`: the last weights ship)."""
    key = f"val_{task.headline.metric}"
    best: tuple[float, float] | None = None
    for row in validation:
        if key in row and (best is None or task.headline.improved(row[key], best[0])):
            best = (row[key], row["step"])
    return (float(best[0]), int(best[1])) if best else (None, None)


def summarize(
    fcfg: FinetuneShared,
    task: Task,
    max_length: int,
    trainer: L.Trainer,
    module: TaskModule,
    built: TaskModel,
    history: Any,
    best_weights: Any,
    train_seconds: float,
    run_id: str | None,
) -> TrainingSummary:
    """The run's training.json: window, best score and step, cost, setup and history."""
    best_score = best_weights.best_model_score
    best_val, step = best_validation(history.val, task)
    config = mergeable(module.model).config
    return TrainingSummary(
        task=task.name,
        headline=task.headline.metric,
        max_length=max_length,
        best_val=float(best_score) if best_score is not None else best_val,
        best_step=step,
        global_step=trainer.global_step,
        world_size=trainer.world_size,
        num_nodes=trainer.num_nodes,
        epochs_completed=trainer.current_epoch,
        train_seconds=train_seconds,
        padding_share=module.padding_share,
        real_tokens=module.real_tokens,
        real_tokens_per_second=module.real_tokens / train_seconds * trainer.world_size,
        params_total=built.counts["total"],
        params_trainable=built.counts["trainable"],
        frozen_tensors=len(built.frozen),
        init=fcfg.init,
        strategy=fcfg.strategy,
        pooling=getattr(config, POOLING_KEY, None),
        word_shapes=uses_shapes(config),
        mlflow_run_id=run_id,
        history={"train": history.train, "validation": history.val},
    )
