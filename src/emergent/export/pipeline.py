"""The export stage's work: prune (optional), fused ONNX export, int8 quantization, parity
gate, timing and the package files. The stage (`emergent.stages.export`) only wires paths and
tracking around `export_package`."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from emergent.config import Paths
from emergent.data.layout import HELD_OUT, corpus_path, load_task_split, read_corpus
from emergent.errors import ConfigError, StageError
from emergent.evaluation.bootstrap import Bootstrap, drop_interval
from emergent.evaluation.plots import write_csv
from emergent.evaluation.predict import batches, encode_for_scoring, predict, torch_forward
from emergent.export import timing
from emergent.export.card import model_card
from emergent.export.tradeoff import CURVE_FIELDS, Candidate, choose
from emergent.hardware import device_facts
from emergent.io import write_json
from emergent.models.finetuned import load_finetuned
from emergent.models.summary import TrainingSummary
from emergent.schema import Settings
from emergent.serving.package import FP32_MODEL_FILE, MODEL_FILE, ExportInfo, ParityReport, Variant
from emergent.serving.runtime import ort_forward, session
from emergent.tasks import Task, task_spec

log = logging.getLogger(__name__)

PARITY_EXAMPLES = 256
IMPORTANCE_BATCH = 16


def max_logit_diff(
    task: Task,
    model: torch.nn.Module,
    sess: object,
    tokenizer: object,
    examples: list[dict],
    labels: list[str],
    max_length: int,
) -> float:
    """Largest |logit difference| between PyTorch and an ONNX session on test rows (real
    tokens only for per-token logits: padding carries no prediction)."""
    rows = encode_for_scoring(task, tokenizer, examples[:PARITY_EXAMPLES], labels, max_length)
    worst = 0.0
    for _, batch in batches(task, tokenizer, rows, 32):
        with torch.inference_mode():
            ref = torch_forward(model)(batch).numpy()
        diff = np.abs(ort_forward(sess)(batch) - ref)
        if diff.ndim == 3:
            diff = diff[batch["attention_mask"].numpy().astype(bool)]
        worst = max(worst, float(diff.max()))
    return worst


def gate_failures(parity: ParityReport, name: str) -> list[str]:
    """Why the package must not ship: fp32 ONNX off PyTorch, or int8 losing too much.

    The drop is judged on the validation split, where the pruning level and the int8 scheme
    were chosen; the test split only reports (a choice made on it would flatter its figures).
    With `export.drop_gate: significant` a drop over `max_metric_drop` is refused only when
    its paired bootstrap interval lies above zero: on 141 validation entities one entity moves
    NER F1 by about 0.8 points, so the point estimate alone refused packages over a coin toss.
    """
    failures = []
    if parity.max_abs_logit_diff > parity.atol:
        failures.append(
            f"fp32 ONNX logits differ from PyTorch by "
            f"{parity.max_abs_logit_diff:.2e} > export.parity_atol={parity.atol}"
        )
    drop, allowed = parity.int8_val_drop, parity.max_metric_drop
    if drop > allowed:
        low, high = parity.int8_val_drop_ci
        if parity.drop_gate == "significant" and low <= 0.0:
            log.warning(
                "int8 %s drops %.2f points on validation (> export.max_metric_drop=%s), but its "
                "paired interval %.2f to %.2f reaches zero (no loss): shipping "
                "(export.drop_gate=significant)",
                name,
                drop,
                allowed,
                low,
                high,
            )
        else:
            failures.append(
                f"int8 {name} drops {drop:.2f} points on the validation split "
                f"(> export.max_metric_drop={allowed}; paired interval {low:.2f} to {high:.2f}, "
                f"export.drop_gate={parity.drop_gate})"
            )
    return failures


EXPORTABLE_MODEL_TYPES = ("bert",)


def require_encoder(model_dir: Path) -> None:
    """Refuse, in one line, a fine-tuned model the export cannot handle: head pruning, ONNX
    Runtime's fusion (`model_type="bert"`) and the QAttention int8 scheme are all built for
    BERT-style encoders, and a causal LM (Llama) would fail deep inside them. Checked before
    anything loads, so no package or MLflow run is half-made."""
    config = model_dir / "config.json"
    if not config.is_file():
        raise StageError(f"{model_dir} has no fine-tuned model: run finetune first")
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type not in EXPORTABLE_MODEL_TYPES:
        raise ConfigError(
            "model.family",
            f"the int8 export handles BERT-style encoders only; {model_dir} is a "
            f"{model_type!r} model (a causal backbone is not exported yet)",
        )


def publish(paths: Paths, task: Task, result: dict[str, Any]) -> None:
    """Write the trade-off curve and the headline metrics file of a package that shipped
    (after the gate: a failed export leaves the previous figures beside the previous package)."""
    write_csv(paths.out("plots", "export", f"{task.name}_prune.csv"), result["curve"], CURVE_FIELDS)
    write_json(paths.out("metrics", f"export_{task.name}.json"), result["headline"])


@dataclass
class ExportInputs:
    """What an export works from: the fine-tuned model, its labels and window, and the
    prepared splits. Its methods are the callbacks the pruning search (`choose`) takes.
    `settings` is what the export reads; `cfg`, the composed config, goes only to what reads
    it still (the task definition saved in the package)."""

    cfg: DictConfig
    settings: Settings
    task: Task
    model_dir: Path
    model: torch.nn.Module
    tokenizer: Any
    labels: list[str]
    prepared: Path
    splits: dict[str, list[dict]]
    training: TrainingSummary
    max_length: int

    @classmethod
    def load(cls, cfg: DictConfig, settings: Settings, paths: Paths, task: Task) -> ExportInputs:
        model_dir = paths.inp("models", task.name)
        model, tokenizer, labels = load_finetuned(task, model_dir)
        task = task.for_model(model.config)  # decode as the model learned to (CRF scores)
        prepared = paths.inp(settings.data.prepared_dir)
        splits = {s: load_task_split(prepared, task.name, s) for s in HELD_OUT}
        training = TrainingSummary.load(model_dir)
        return cls(
            cfg,
            settings,
            task,
            model_dir,
            model,
            tokenizer,
            labels,
            prepared,
            splits,
            training,
            training.max_length,  # the window the model was trained with
        )

    @property
    def test_texts(self) -> list[str]:
        return [self.task.text(e) for e in self.splits["test"]]

    def predict(self, forward: Any, tok: Any, split: str) -> tuple[list, list]:
        return predict(self.task, forward, tok, self.splits[split], self.labels, self.max_length)

    def score(self, split: str, predicted: tuple[list, list]) -> float:
        """The task's headline metric of `predicted` on `split`, in points."""
        rows = self.splits[split]
        return self.task.headline.points(self.task.evaluate(rows, self.labels, *predicted).metrics)

    def evaluate(self, forward: Any, tok: Any, split: str = "test") -> float:
        """The headline metric of a forward function on `split`, in points. Choices (pruning
        level, int8 scheme) are made on validation; test figures are reported, never chosen on."""
        return self.score(split, self.predict(forward, tok, split))

    def importance_batches(self) -> list[dict]:
        """Validation batches for the heads' and neurons' importance scores."""
        pcfg = self.settings.export.prune
        assert pcfg is not None  # asked for by the pruning search only
        rows = load_task_split(self.prepared, self.task.name, "validation")
        encoded = encode_for_scoring(
            self.task,
            self.tokenizer,
            rows[: pcfg.importance_examples],
            self.labels,
            self.max_length,
        )
        return [batch for _, batch in batches(self.task, self.tokenizer, encoded, IMPORTANCE_BATCH)]

    def vocab_texts(self) -> list[str]:
        """The text a pruned vocabulary keeps: the corpus and the task's train text, so
        validation and test text stay unseen and show what new text loses to the cut
        vocabulary (validation decides, test reports)."""
        corpus = read_corpus(corpus_path(self.prepared, "train"))
        train = load_task_split(self.prepared, self.task.name, "train")
        return corpus + [self.task.text(e) for e in train]

    @property
    def recover_steps(self) -> int:
        prune = self.settings.export.prune
        return prune.recover_steps if prune else 0

    def recover_pruned(self, pruned: Any) -> float:
        """Fine-tune a pruned model back, distilling from the unpruned one. Lightning is
        imported here: an export without recovery (`export.prune=null` or `recover_steps: 0`)
        never loads it."""
        from emergent.export.recover import recover

        return recover(
            pruned,
            self.tokenizer,
            self.task,
            self.labels,
            self.settings,
            self.prepared,
            self.max_length,
            self.recover_steps,
            teacher=self.model,
        )


def ship_int8(inp: ExportInputs, chosen: Candidate, tmp: Path) -> None:
    """Move the chosen candidate's int8 model to `tmp/model.int8.onnx`. A pruning curve
    already kept each candidate's more accurate scheme (`export.per_channel`) and scored it
    (`chosen.row`: val_metric, metric); without pruning the one candidate is scored here."""
    if "val_metric" not in chosen.row:  # export.prune=null: not scored by the curve
        forward = chosen.pick_scheme(lambda f, tok: inp.evaluate(f, tok, "validation"))
        chosen.row["metric"] = inp.evaluate(forward, chosen.tokenizer, "test")
    shutil.move(str(chosen.int8_path), tmp / MODEL_FILE)


def parity_report(
    inp: ExportInputs,
    chosen: Candidate,
    scores: dict[str, float],
    baseline: dict[str, float],
    reference: dict[str, list],
    shipped: dict[str, list],
    fp32_sess: Any,
) -> ParityReport:
    """How far the package is from the fine-tuned model: fp32 ONNX logits off PyTorch, the
    int8 drop on test and on validation (the gate's), each with its paired bootstrap interval
    (`reference` and `shipped`: both models' predictions per split)."""
    task, ecfg = inp.task, inp.settings.export
    examples = inp.splits["test"]
    settings = Bootstrap.from_settings(inp.settings)
    intervals = {
        split: list(
            drop_interval(
                task, inp.splits[split], inp.labels, reference[split], shipped[split], settings
            )
        )
        for split in ("test", "validation")
    }
    return ParityReport(
        max_abs_logit_diff=max_logit_diff(
            task, chosen.model, fp32_sess, chosen.tokenizer, examples, inp.labels, inp.max_length
        ),
        atol=ecfg.parity_atol,
        int8_drop=task.headline.drop(scores[Variant.FP32_TORCH], scores[Variant.INT8_ONNX]),
        # paired bootstrap over test examples: how far the test drop is from noise
        int8_drop_ci=intervals["test"],
        int8_val_drop=task.headline.drop(baseline["validation"], chosen.row["val_metric"]),
        int8_val_drop_ci=intervals["validation"],
        max_metric_drop=ecfg.max_metric_drop,
        drop_gate=ecfg.drop_gate,
        per_channel=chosen.per_channel,
        threads=torch.get_num_threads(),
    )


def shipped_row(chosen: Candidate, parity: ParityReport, int8_figures: dict[str, float]) -> None:
    """Without pruning the curve is the one shipped model (DVC expects the file): fill its row
    (its int8 scores are already there, from `ship_int8`)."""
    chosen.row.update(
        drop=parity.int8_drop,
        val_drop=parity.int8_val_drop,
        throughput=int8_figures["throughput"],
        latency_ms_p50=int8_figures["latency_ms_p50"],
        size_mb=int8_figures["size_mb"],
    )


def write_package(tmp: Path, inp: ExportInputs, chosen: Candidate, info: ExportInfo) -> None:
    """The package's own files beside its models: tokenizer, labels, export.json, model card."""
    chosen.tokenizer.save_pretrained(str(tmp))
    write_json(tmp / "labels.json", inp.labels)
    info.save(tmp)
    (tmp / "MODEL_CARD.md").write_text(
        model_card(
            inp.task,
            inp.settings,
            info.variants,
            inp.labels,
            inp.training,
            info.parity,
            info.pruning,
        ),
        encoding="utf-8",
    )


def headline_figures(info: ExportInfo) -> dict[str, Any]:
    """`metrics/export_<task>.json`: per variant metric, size, latency and throughput, the
    int8 speed-up and drop (no nested details, so `dvc metrics show` stays readable)."""
    parity = info.parity
    return {
        **{
            v: {k: figures[k] for k in ("metric", "size_mb", "latency_ms_p50", "throughput")}
            for v, figures in info.variants.items()
        },
        "int8_vs_torch_throughput": info.ratios.get("int8_vs_torch_throughput_b32"),
        "int8_drop": parity.int8_drop,
        "int8_drop_ci_low": parity.int8_drop_ci[0],
        "int8_drop_ci_high": parity.int8_drop_ci[1],
        "int8_val_drop": parity.int8_val_drop,
        "int8_val_drop_ci_low": parity.int8_val_drop_ci[0],
        "int8_val_drop_ci_high": parity.int8_val_drop_ci[1],
    }


def export_package(
    cfg: DictConfig, settings: Settings, paths: Paths, task: Task, tmp: Path
) -> tuple[dict[str, Any], list[str]]:
    """Write the package into `tmp` only; return its figures (`headline` and `curve` for
    `publish`) and the parity-gate failures (empty when the package may ship)."""
    ecfg = settings.export
    inp = ExportInputs.load(cfg, settings, paths, task)
    model, tokenizer = inp.model, inp.tokenizer
    texts = inp.test_texts
    reference = {s: inp.predict(torch_forward(model), tokenizer, s) for s in inp.splits}
    baseline = {s: inp.score(s, reference[s]) for s in inp.splits}
    work = tmp / "candidates"
    work.mkdir()
    chosen, curve = choose(
        ecfg,
        model,
        tokenizer,
        baseline,
        inp.evaluate,
        inp.importance_batches,
        inp.vocab_texts,
        texts,
        work,
        inp.recover_pruned if inp.recover_steps else None,
        drop=task.headline.drop,
    )
    shutil.move(str(chosen.fp32_path), tmp / FP32_MODEL_FILE)
    fp32_sess = session(tmp / FP32_MODEL_FILE)
    scores = {
        Variant.FP32_TORCH: baseline["test"],
        "pruned_torch": inp.evaluate(torch_forward(chosen.model), chosen.tokenizer),
        Variant.FP32_ONNX: inp.evaluate(ort_forward(fp32_sess), chosen.tokenizer),
    }
    ship_int8(inp, chosen, tmp)
    scores[Variant.INT8_ONNX] = chosen.row["metric"]
    shutil.rmtree(work)

    int8_sess = session(tmp / MODEL_FILE)
    shipped = {
        s: inp.predict(ort_forward(int8_sess), chosen.tokenizer, s)[0]
        for s in ("test", "validation")
    }
    parity = parity_report(
        inp,
        chosen,
        scores,
        baseline,
        {s: reference[s][0] for s in shipped},
        shipped,
        fp32_sess,
    )
    measured = timing.measure_package(
        model,
        tokenizer,
        inp.model_dir,
        tmp,
        chosen.tokenizer,
        texts,
        ecfg.seq_length,
        ecfg.bench.batch1_runs,
        ecfg.bench.batch32_runs,
        ecfg.bench.warmup,
        sessions={Variant.FP32_ONNX: fp32_sess, Variant.INT8_ONNX: int8_sess},
    )
    variants = {v: {"metric": scores[v], **figures} for v, figures in measured.items()}
    if not curve:
        shipped_row(chosen, parity, variants[Variant.INT8_ONNX])
    pruned = {**chosen.row, "metric_torch": scores["pruned_torch"], "fused_ops": chosen.fused_ops}
    info = ExportInfo(
        task=task.name,
        # the server rebuilds the task from it, with what the model learned (CRF scores: the
        # task as the model decodes, `inp.task`)
        task_spec={**task_spec(cfg, task.name), **inp.task.model_spec()},
        pad_token_id=int(chosen.tokenizer.pad_token_id or 0),
        max_length=inp.max_length,
        opset=ecfg.opset,
        per_channel=chosen.per_channel,
        metric_name=task.headline.label,
        seq_length=ecfg.seq_length,
        device=device_facts("cpu"),
        variants=variants,
        parity=parity,
        ratios=timing.ratios(variants),
        pruning=pruned if curve else None,
    )
    write_package(tmp, inp, chosen, info)
    result = {**info.logged(), "headline": headline_figures(info), "curve": curve or [chosen.row]}
    return result, gate_failures(parity, task.headline.label)
