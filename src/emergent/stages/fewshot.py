"""Stage `fewshot`: prompt-based few-shot and in-context learning across backbones.

Reads the task's prepared splits and every configured backbone (by default the pipeline's
`models/pretrained`), runs the protocol (emergent.fewshot.protocol) and writes
`metrics/fewshot.json` {model: {method: {k: {mean, std, n_seeds}}}}, `plots/fewshot/` and
`reports/fewshot/` (summary.md, every run in results.csv). One MLflow parent run, with a
nested run per (model, method, k, seed).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from emergent.config import Paths, project_root
from emergent.data.layout import SPLITS, load_task_split, manifest_path
from emergent.errors import StageError
from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot import FewShotConfigError
from emergent.fewshot.causal_lab import build_causal_lab
from emergent.fewshot.demonstrations import fixed_subset
from emergent.fewshot.protocol import AnyLab, FewShotData, Lab, run_protocol
from emergent.fewshot.report import paired_comparisons, write_outputs
from emergent.fewshot.templates import Template
from emergent.fewshot.verbalizers import build_verbalizer
from emergent.hardware import resolve_precision
from emergent.io import sha256_file
from emergent.models.backbone import load_tokenizer
from emergent.models.source import ModelSourceError
from emergent.tasks import get_task
from emergent.tasks.sequence_classification import SequenceClassificationTask
from emergent.tracking import Tracker, git_info, stage_run

log = logging.getLogger(__name__)


def count_parameters(folder: Path) -> int:
    """Parameter count from the safetensors header (no model instantiation)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return sum(math.prod(fh.get_slice(key).get_shape()) for key in fh.keys())  # noqa: SIM118 (not iterable)


def backbones(cfg: DictConfig, paths: Paths) -> list[dict[str, Any]]:
    """Configured backbones (plus pretraining snapshots if asked) with size and tokens seen.

    A `path` entry is a masked-LM folder made by the pipeline; a `preset` entry is a model
    preset of conf/model/ loaded from its `source` (a causal LM among them).
    """
    fcfg, pcfg = cfg.fewshot, cfg.pretrain
    tokens_per_step = int(pcfg.batch_size) * min(int(pcfg.block_size), int(cfg.model.max_length))
    entries = []
    configured = [OmegaConf.to_container(e) for e in fcfg.models]
    for index, entry in enumerate(configured + scale_models(cfg, paths)):
        key = f"fewshot.models[{index}]"
        methods = [str(m) for m in (entry.get("methods") or fcfg.methods)]  # type: ignore[union-attr]
        ks = [int(k) for k in (entry.get("k") or fcfg.k)]  # type: ignore[union-attr]
        if entry.get("preset"):  # type: ignore[union-attr]
            model_cfg = preset_model(str(entry["preset"]), key)  # type: ignore[index]
            if entry.get("source"):  # type: ignore[union-attr]
                model_cfg.source = str(entry["source"])  # type: ignore[index]
            entries.append(
                {
                    "name": str(entry["name"]),  # type: ignore[index]
                    "key": key,
                    "model": model_cfg,
                    "family": str(model_cfg.family),
                    "methods": methods,
                    "k": ks,
                    "params": None,  # counted once loaded (a GGUF file has no safetensors)
                    "pretrain_steps": None,
                    "pretrain_tokens": model_cfg.training_tokens,
                }
            )
            continue
        folder = paths.inp(str(entry["path"]))  # type: ignore[index]
        if not (folder / "config.json").is_file():
            raise StageError(
                f"{key}.path: {folder} is not a model folder (run the pretrain stage first)"
            )
        steps = None
        metrics = folder.parent.parent / "metrics" / "pretrain.json"
        if metrics.is_file():
            steps = json.loads(metrics.read_text()).get("global_step")
        candidates = [(str(entry["name"]), folder, steps)]  # type: ignore[index]
        snapshot_dir = folder / "snapshots"
        if fcfg.get("include_snapshots") and snapshot_dir.is_dir():
            for snap in sorted(snapshot_dir.iterdir(), key=lambda p: int(p.name.split("-")[-1])):
                candidates.append(
                    (f"{entry['name']}@{snap.name}", snap, int(snap.name.split("-")[-1]))  # type: ignore[index]
                )
        for name, path, step in candidates:
            entries.append(
                {
                    "name": name,
                    "key": key,
                    "path": path,
                    "family": "masked",
                    "methods": methods,
                    "k": ks,
                    "params": count_parameters(path),
                    "pretrain_steps": step,
                    "pretrain_tokens": None if step is None else step * tokens_per_step,
                }
            )
    return entries


def causal_settings(cfg: DictConfig, models: list[dict[str, Any]]) -> dict[str, str]:
    """The summary's settings rows for the causal LMs' prompts and fine-tuning."""
    if not any(m["family"] == "causal" for m in models):
        return {}
    fcfg = cfg.fewshot
    prompt = fcfg.causal_prompts[str(fcfg.task)]
    causal = fcfg.causal
    words = ", ".join(f"{k}: {v}" for k, v in prompt.verbalizer.items())
    adapter = (
        f"LoRA r={causal.lora.r} on {', '.join(causal.lora.target_modules)}"
        if causal.adapter == "lora"
        else "every weight"
    )
    return {
        "causal template": f"`{prompt.template!r}`",
        "causal verbalizer": words,
        "causal prompt fine-tuning": f"{adapter}, {causal.train.steps} steps, lr {causal.train.lr}",
    }


def pretraining_note(entry: dict[str, Any]) -> str:
    """What the model's pretraining was, for the summary's model headers."""
    if entry["family"] == "causal":
        tokens = entry["pretrain_tokens"]
        return f"~{tokens:.2g} tokens (published)" if tokens else "unknown"
    if not entry["pretrain_steps"]:
        return "none"
    return f"{entry['pretrain_steps']} MLM steps (~{entry['pretrain_tokens']:,} tokens)"


def preset_model(preset: str, key: str) -> DictConfig:
    """The `model` section of a preset in conf/model/, as composed (its source checked)."""
    from hydra.errors import MissingConfigException

    from emergent.config import compose

    try:
        model_cfg = compose([f"model={preset}"]).model
    except MissingConfigException:
        raise StageError(f"{key}.preset={preset!r}: no conf/model/{preset}.yaml") from None
    if not model_cfg.get("source"):
        raise StageError(
            f"{key}.preset={preset!r} has no `source` (a from-scratch preset): add it to "
            "fewshot.scale.models instead, which pretrains it"
        )
    return model_cfg


def scale_models(cfg: DictConfig, paths: Paths) -> list[dict[str, str]]:
    """Backbones of other model presets (`fewshot.scale.models`), each built by the tokenizer
    and pretrain stages with `fewshot.scale.overrides`, into `checkpoints/fewshot/<preset>/`
    (kept between runs: a folder that already holds a pretrained model is reused)."""
    from emergent.config import compose
    from emergent.stages import run_stage

    scale = cfg.fewshot.get("scale") or {}
    entries = []
    for preset in scale.get("models") or []:
        out = paths.out("checkpoints", "fewshot", str(preset))
        if not (out / "models" / "pretrained" / "config.json").is_file():
            sub = compose([f"model={preset}", *list(scale.get("overrides") or [])])
            sub.mlflow = cfg.mlflow
            sub_paths = Paths(paths.input_dir, out)
            log.info("fewshot: pretraining the %s preset into %s", preset, out)
            for stage in ("tokenizer", "pretrain"):
                run_stage(stage, sub, sub_paths)
        entries.append({"name": str(preset), "path": str(out / "models" / "pretrained")})
    return entries


def nested_runs(tracker: Tracker, model: str, tags: dict[str, str]) -> Callable[[dict], None]:
    """One nested MLflow run per result row, tagged like the stage run."""

    def log_row(row: dict) -> None:
        if not tracker.enabled:
            return
        import mlflow

        name = f"{model}/{row['method']}/k={row['k']}/seed={row['seed']}"
        run_tags = {**tags, "model": model, "method": row["method"]}
        with mlflow.start_run(run_name=name, nested=True, tags=run_tags):
            mlflow.log_params(
                {"model": model, "method": row["method"], "k": row["k"], "seed": row["seed"]}
            )
            mlflow.log_metrics(
                {
                    k: float(v)
                    for k, v in row.items()
                    if isinstance(v, int | float) and k not in ("k", "seed")
                }
            )

    return log_row


def make_lab(cfg: DictConfig, entry: dict[str, Any], data: FewShotData, spec: Any) -> AnyLab:
    """The protocol's view of one backbone; checks methods, template and verbalizer first."""
    fcfg = cfg.fewshot
    task = str(fcfg.task)
    lab: AnyLab
    if entry["family"] == "causal":
        if task not in fcfg.causal_prompts:
            raise StageError(
                f"fewshot.causal_prompts has no entry for fewshot.task={task!r} "
                f"({entry['key']} is a causal LM: it needs a next-word template)"
            )
        lab = build_causal_lab(
            entry["model"], fcfg, data, Bootstrap.from_config(cfg), f"{entry['key']}.preset"
        )
    else:
        lab = make_masked_lab(cfg, entry, data, spec.model_class())
    unsupported = [m for m in entry["methods"] if not lab.supports(m)]
    if unsupported:
        raise StageError(
            f"{entry['key']}.methods: {unsupported} cannot run on a {entry['family']} LM "
            f"({entry['name']}); give this model its own `methods`"
        )
    return lab


def make_masked_lab(
    cfg: DictConfig, entry: dict[str, Any], data: FewShotData, classifier_class: Any
) -> Lab:
    """A masked LM under the protocol; checks template and verbalizer against its vocab."""
    fcfg = cfg.fewshot
    task = str(fcfg.task)
    tcfg = fcfg.prompts[task]
    tokenizer = load_tokenizer(entry["path"])
    config = json.loads((entry["path"] / "config.json").read_text())
    return Lab(
        path=entry["path"],
        tokenizer=tokenizer,
        template=Template.parse(str(tcfg.template), f"fewshot.prompts.{task}.template"),
        verbalizer=build_verbalizer(
            tokenizer, tcfg.verbalizer, data.labels, f"fewshot.prompts.{task}.verbalizer"
        ),
        data=data,
        max_length=min(int(fcfg.max_length), int(config.get("max_position_embeddings", 512))),
        query_tokens=int(fcfg.query_tokens),
        demo_tokens=int(fcfg.demonstrations.max_tokens),
        demos_per_class=int(fcfg.demonstrations.per_class),
        content_free=list(fcfg.content_free),
        train=OmegaConf.to_container(fcfg.train),  # type: ignore[arg-type]
        classifier_class=classifier_class,
        batch_size=int(fcfg.batch_size),
        bootstrap=Bootstrap.from_config(cfg),
    )


def run(cfg: DictConfig, paths: Paths) -> None:
    fcfg = cfg.fewshot
    task = str(fcfg.task)
    if task not in fcfg.prompts:
        raise StageError(
            f"fewshot.prompts has no entry for fewshot.task={task!r} (template, verbalizer)"
        )
    tcfg = fcfg.prompts[task]
    seed = int(cfg.seed)
    L.seed_everything(seed, verbose=False)
    prepared = paths.inp(cfg.data.prepared_dir)
    spec = get_task(cfg, task)
    if not isinstance(spec, SequenceClassificationTask):
        raise StageError(
            f"fewshot.task={task!r} is a {spec.kind} task; the few-shot lab needs a "
            "sequence-classification task (one label per text)"
        )
    splits = {
        name: [
            {"text": spec.text(e), "label": str(e["label"])}
            for e in load_task_split(prepared, task, name)
        ]
        for name in SPLITS
    }
    labels = spec.labels(splits["train"])
    data = FewShotData(
        labels,
        splits["train"],
        splits["validation"],
        fixed_subset(splits["test"], fcfg.test_size, seed),
    )
    manifest = manifest_path(prepared)
    data_sha = sha256_file(manifest) if manifest.is_file() else ""
    models = backbones(cfg, paths)
    try:  # every config error surfaces before any run starts
        labs = [(entry, make_lab(cfg, entry, data, spec)) for entry in models]
    except (FewShotConfigError, ModelSourceError) as err:
        raise StageError(str(err)) from None
    # Same rule as the trainers' `precision=auto`: bf16 autocast where the CPU computes bf16
    # natively (training and scoring ~1.5x faster there), fp32 elsewhere.
    precision = resolve_precision(str(fcfg.precision))
    bf16 = precision.startswith("bf16")
    start = time.perf_counter()
    rows: list[dict] = []
    with (
        stage_run(cfg, "fewshot", "fewshot", data_sha256=data_sha) as tracker,
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    ):
        tracker.log_params({"precision_resolved": precision})
        tags = {
            **git_info(project_root()),
            "dvc_stage": "fewshot",
            "data_sha256": data_sha or "unknown",
        }
        for entry, lab in labs:
            if entry["params"] is None:
                entry["params"] = lab.parameters  # type: ignore[attr-defined]
            log.info("fewshot: %s (%d parameters)", entry["name"], entry["params"])
            try:
                results = run_protocol(
                    lab,
                    entry["methods"],
                    entry["k"],
                    [int(s) for s in fcfg.seeds],
                    bool(fcfg.prompt_demonstrations),
                    on_result=nested_runs(tracker, entry["name"], tags),
                )
            except (FewShotConfigError, ModelSourceError) as err:
                raise StageError(str(err)) from None
            rows += [{"model": entry["name"], **r} for r in results]
            release = getattr(lab, "release", None)
            if release:
                release()  # a causal LM's weights are not needed by the next backbone
        seconds = time.perf_counter() - start
        info = {
            e["name"]: {
                "params": e["params"],
                "pretrain_steps": e["pretrain_steps"],
                "pretrain_tokens": e["pretrain_tokens"],
                "family": e["family"],
                "pretraining": pretraining_note(e),
            }
            for e in models
        }
        settings = {
            "test examples": len(data.test),
            "majority-class accuracy": round(
                max(sum(e["label"] == lab for e in data.test) for lab in labels)
                / max(len(data.test), 1),
                4,
            ),
            "k per class": ", ".join(f"{m['name']}: {m['k']}" for m in models),
            "seeds": list(fcfg.seeds),
            "template": f"`{tcfg.template}`",
            "verbalizer": ", ".join(f"{k}: {v}" for k, v in tcfg.verbalizer.items()),
            **causal_settings(cfg, models),
            "fine-tuning steps": int(fcfg.train.steps),
            "wall time (s)": round(seconds, 1),
        }
        tables = write_outputs(
            rows,
            info,
            task,
            settings,
            paths.out("metrics", "fewshot.json"),
            paths.out("plots", "fewshot"),
            paths.out("reports", "fewshot"),
            paired_comparisons(rows, list(fcfg.compare), Bootstrap.from_config(cfg)),
        )
        tracker.log_metrics(
            {
                f"{model}.{method}.k{k}.accuracy": cell["mean"]
                for model, table in tables.items()
                for method, cells in table.items()
                for k, cell in cells.items()
            }
        )
        tracker.log_metrics({"wall_seconds": seconds})
        tracker.log_artifact(paths.out("reports", "fewshot"), "reports")
        tracker.log_artifact(paths.out("plots", "fewshot"), "plots")
        log.info("fewshot: %d runs in %.0f s", len(rows), seconds)
