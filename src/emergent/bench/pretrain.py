"""Training-step throughput: the Lightning pretrain module vs a minimal hand-written loop, and
fp32 vs bf16-mixed, over the same model initialisation, batches and optimizer.

Rounds are interleaved (A B C D, A B C D, ...) so drift in machine load hits every variant
alike; the median over rounds is reported.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from emergent.config import Paths
from emergent.data.layout import corpus_path, read_corpus
from emergent.data.mlm import MaskingCollator, masking_settings, pack_blocks
from emergent.models.backbone import build_tokenizer, load_mlm_model, load_tokenizer
from emergent.models.mlm import MaskedLMModule, masked_lm_loss
from emergent.models.optim import linear_warmup_decay, param_groups
from emergent.schema import PretrainConfig, Settings
from emergent.training import route_lightning_logs

log = logging.getLogger(__name__)


class StepTimer(Callback):
    """Wall time from the start of step `warmup` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, idx: int):
        if idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.end = time.perf_counter()


def make_batches(settings: Settings, paths: Paths, tokenizer: Any, n: int) -> list[dict]:
    pcfg = settings.pretrain
    texts = read_corpus(corpus_path(paths.inp(settings.data.prepared_dir), "train"))
    blocks = pack_blocks(tokenizer, texts[: 40 * n * pcfg.batch_size], pcfg.block_size)
    collate = MaskingCollator(tokenizer, masking_settings(pcfg), seed=settings.seed)
    size = pcfg.batch_size
    batches = [collate(list(blocks[i * size : (i + 1) * size])) for i in range(n)]
    if len(batches[-1]["input_ids"]) < size:
        raise ValueError("corpus too small for the benchmark batches")
    return batches


def optimizer_for(model: Any, pcfg: PretrainConfig, total: int) -> tuple[Any, Any]:
    o = pcfg.optimizer
    opt = torch.optim.AdamW(
        param_groups(model.named_parameters(), o.weight_decay),
        lr=o.lr,
        betas=(o.betas[0], o.betas[1]),
        eps=o.eps,
    )
    return opt, linear_warmup_decay(opt, total, pcfg.warmup_ratio)


#: the two precisions compared (Lightning's names; the manual loop autocasts for bf16)
Precision = Literal["32-true", "bf16-mixed"]


def manual_loop(
    model: Any, batches: list[dict], pcfg: PretrainConfig, precision: Precision, warmup: int
) -> float:
    """The minimal loop Lightning replaces: forward, backward, clip, step, schedule."""
    opt, sched = optimizer_for(model, pcfg, len(batches))
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()
    )
    model.train()
    start = None
    for index, batch in enumerate(batches):
        if index == warmup:
            start = time.perf_counter()
        with autocast:
            loss, _ = masked_lm_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), pcfg.gradient_clip_val)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    assert start is not None
    return time.perf_counter() - start


def lightning_loop(
    model: Any, batches: list[dict], pcfg: PretrainConfig, precision: Precision, warmup: int
) -> float:
    o = pcfg.optimizer
    module = MaskedLMModule(
        model,
        lr=o.lr,
        weight_decay=o.weight_decay,
        betas=(o.betas[0], o.betas[1]),
        eps=o.eps,
        warmup_ratio=pcfg.warmup_ratio,
        total_steps=len(batches),
    )
    timer = StepTimer(warmup)
    route_lightning_logs()  # a bare Trainer: one line per Lightning message, as the stages
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=pcfg.gradient_clip_val,
        callbacks=[timer],
    )
    # torch types a Dataset; a list is a map-style one
    loader: DataLoader[dict] = DataLoader(batches, batch_size=None)  # type: ignore[arg-type]
    trainer.fit(module, train_dataloaders=loader)
    assert timer.start is not None and timer.end is not None
    return timer.end - timer.start


Loop = Callable[[Any, list[dict], PretrainConfig, Precision, int], float]


def run(settings: Settings, paths: Paths, rounds: int = 3, steps: int = 8, warmup: int = 2) -> dict:
    tok_dir = paths.inp("models", "tokenizer")
    if tok_dir.is_dir():
        tokenizer = load_tokenizer(tok_dir)
    else:
        corpus = read_corpus(corpus_path(paths.inp(settings.data.prepared_dir), "train"))
        tokenizer = build_tokenizer(settings.model, corpus)
    batches = make_batches(settings, paths, tokenizer, steps)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[warmup:])
    torch.manual_seed(settings.seed)
    initial = load_mlm_model(settings.model, tokenizer)
    variants: dict[str, tuple[Loop, Precision]] = {
        "lightning_fp32": (lightning_loop, "32-true"),
        "manual_fp32": (manual_loop, "32-true"),
        "lightning_bf16": (lightning_loop, "bf16-mixed"),
        "manual_bf16": (manual_loop, "bf16-mixed"),
    }
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for round_index in range(rounds):
        for name, (loop, precision) in variants.items():
            elapsed = loop(copy.deepcopy(initial), batches, settings.pretrain, precision, warmup)
            seconds[name].append(elapsed)
            log.info("round %d %s: %.0f tok/s", round_index, name, tokens / elapsed)
    tps = {k: tokens / statistics.median(v) for k, v in seconds.items()}
    return {
        "model": settings.model.name,
        "batch_size": settings.pretrain.batch_size,
        "block_size": settings.pretrain.block_size,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "timed_steps": steps - warmup,
        "tokens_per_second": tps,
        "ratios": {
            "lightning_vs_manual_fp32": tps["lightning_fp32"] / tps["manual_fp32"],
            "lightning_vs_manual_bf16": tps["lightning_bf16"] / tps["manual_bf16"],
            "bf16_vs_fp32_lightning": tps["lightning_bf16"] / tps["lightning_fp32"],
            "bf16_vs_fp32_manual": tps["manual_bf16"] / tps["manual_fp32"],
        },
    }
