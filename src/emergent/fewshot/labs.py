"""The few-shot stage's work between config and outputs: the task's data as the lab sees it,
one lab per backbone (masked LMs: `Lab`; causal LMs: `CausalLab`), each checked before any run
starts, the protocol over every lab with one nested MLflow run per result, and what the summary
says about the run's settings."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emergent.config import project_root
from emergent.data.layout import SPLITS, load_task_split
from emergent.errors import StageError
from emergent.evaluation.bootstrap import Bootstrap
from emergent.fewshot import FewShotConfigError
from emergent.fewshot.causal_lab import build_causal_lab
from emergent.fewshot.demonstrations import fixed_subset
from emergent.fewshot.protocol import AnyLab, FewShotData, Lab, run_protocol
from emergent.fewshot.templates import Template
from emergent.fewshot.verbalizers import build_verbalizer
from emergent.models.backbone import load_tokenizer
from emergent.models.source import ModelSourceError
from emergent.schema import FewshotConfig, Settings
from emergent.tasks import Task, get_task
from emergent.tasks.sequence_classification import SequenceClassificationTask
from emergent.tracking import Tracker, git_info

log = logging.getLogger(__name__)


def fewshot_data(cfg: DictConfig, settings: Settings, prepared: Path) -> tuple[FewShotData, Task]:
    """`fewshot.task`'s prepared splits as (text, label) rows, the test split cut to
    `fewshot.test_size`, and the task; refuses a task without a prompt or not one label per
    text. `cfg`: the composed config `get_task` instantiates the task from."""
    fcfg = settings.fewshot
    task = fcfg.task
    if task not in fcfg.prompts:
        raise StageError(
            f"fewshot.prompts has no entry for fewshot.task={task!r} (template, verbalizer)"
        )
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
    data = FewShotData(
        spec.labels(splits["train"]),
        splits["train"],
        splits["validation"],
        fixed_subset(splits["test"], fcfg.test_size, settings.seed),
    )
    return data, spec


def build_labs(
    settings: Settings, models: list[dict[str, Any]], data: FewShotData, spec: Any
) -> list[tuple[dict[str, Any], AnyLab]]:
    """One lab per backbone; every config error surfaces before any run starts."""
    try:
        return [(entry, make_lab(settings, entry, data, spec)) for entry in models]
    except (FewShotConfigError, ModelSourceError) as err:
        raise StageError(str(err)) from None


def run_labs(
    fcfg: FewshotConfig,
    labs: list[tuple[dict[str, Any], AnyLab]],
    tracker: Tracker,
    data_sha: str,
) -> list[dict[str, Any]]:
    """The protocol (methods x k x seeds) on every lab in turn, one nested MLflow run per
    result; a causal LM's weights are released before the next backbone loads."""
    tags = {
        **git_info(project_root()),
        "dvc_stage": "fewshot",
        "data_sha256": data_sha or "unknown",
    }
    rows: list[dict[str, Any]] = []
    for entry, lab in labs:
        if entry["params"] is None:
            entry["params"] = lab.parameters  # type: ignore[attr-defined]
        log.info("fewshot: %s (%d parameters)", entry["name"], entry["params"])
        try:
            results = run_protocol(
                lab,
                entry["methods"],
                entry["k"],
                fcfg.seeds,
                fcfg.prompt_demonstrations,
                on_result=nested_runs(tracker, entry["name"], tags),
            )
        except (FewShotConfigError, ModelSourceError) as err:
            raise StageError(str(err)) from None
        rows += [{"model": entry["name"], **r} for r in results]
        release = getattr(lab, "release", None)
        if release:
            release()  # a causal LM's weights are not needed by the next backbone
    return rows


def summary_settings(
    fcfg: FewshotConfig, models: list[dict[str, Any]], data: FewShotData, seconds: float
) -> dict[str, Any]:
    """The summary's settings rows: test set, k, seeds, prompts, fine-tuning, wall time."""
    tcfg = fcfg.prompts[fcfg.task]
    return {
        "test examples": len(data.test),
        "majority-class accuracy": round(
            max(sum(e["label"] == lab for e in data.test) for lab in data.labels)
            / max(len(data.test), 1),
            4,
        ),
        "k per class": ", ".join(f"{m['name']}: {m['k']}" for m in models),
        "seeds": list(fcfg.seeds),
        "template": f"`{tcfg.template}`",
        "verbalizer": ", ".join(f"{k}: {v}" for k, v in tcfg.verbalizer.items()),
        **causal_settings(fcfg, models),
        "fine-tuning steps": fcfg.train.steps,
        "wall time (s)": round(seconds, 1),
    }


def accuracy_metrics(tables: dict[str, Any]) -> dict[str, float]:
    """`<model>.<method>.k<k>.accuracy`: each cell's mean accuracy, for MLflow."""
    return {
        f"{model}.{method}.k{k}.accuracy": cell["mean"]
        for model, table in tables.items()
        for method, cells in table.items()
        for k, cell in cells.items()
    }


def causal_settings(fcfg: FewshotConfig, models: list[dict[str, Any]]) -> dict[str, str]:
    """The summary's settings rows for the causal LMs' prompts and fine-tuning."""
    if not any(m["family"] == "causal" for m in models):
        return {}
    prompt = fcfg.causal_prompts[fcfg.task]
    causal = fcfg.causal
    words = ", ".join(f"{k}: {v}" for k, v in prompt.verbalizer.items())
    adapter = (
        f"LoRA r={causal.lora.r} on {', '.join(causal.lora.target_modules)}"
        if causal.adapter == "lora"
        else "every weight"
    )
    recipe = f"{adapter}, {causal.train.steps} steps, lr {causal.train.lr}"
    if fcfg.prompt_demonstrations:
        recipe += f", {fcfg.demonstrations.per_class} demonstration(s) per label in every prompt"
    rows = {
        "causal template": f"`{prompt.template!r}`",
        "causal verbalizer": words,
        "causal prompt fine-tuning": recipe,
    }
    if any("prompt_self_training" in m["methods"] for m in models):
        st = causal.self_training
        rows["causal self-training"] = (
            f"{st.unlabelled} unlabelled training texts labelled, the {st.per_class} surest per "
            f"label added to the k shots, {st.steps} steps from the pretrained weights"
        )
    return rows


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


def make_lab(settings: Settings, entry: dict[str, Any], data: FewShotData, spec: Any) -> AnyLab:
    """The protocol's view of one backbone; checks methods, template and verbalizer first."""
    fcfg = settings.fewshot
    task = fcfg.task
    lab: AnyLab
    if entry["family"] == "causal":
        if task not in fcfg.causal_prompts:
            raise StageError(
                f"fewshot.causal_prompts has no entry for fewshot.task={task!r} "
                f"({entry['key']} is a causal LM: it needs a next-word template)"
            )
        lab = build_causal_lab(
            entry["model"], fcfg, data, Bootstrap.from_settings(settings), f"{entry['key']}.preset"
        )
    else:
        lab = make_masked_lab(settings, entry, data, spec.model_class())
    unsupported = [m for m in entry["methods"] if not lab.supports(m)]
    if unsupported:
        raise StageError(
            f"{entry['key']}.methods: {unsupported} cannot run on a {entry['family']} LM "
            f"({entry['name']}); give this model its own `methods`"
        )
    return lab


def make_masked_lab(
    settings: Settings, entry: dict[str, Any], data: FewShotData, classifier_class: Any
) -> Lab:
    """A masked LM under the protocol; checks template and verbalizer against its vocab."""
    fcfg = settings.fewshot
    task = fcfg.task
    tcfg = fcfg.prompts[task]
    tokenizer = load_tokenizer(entry["path"])
    config = json.loads((entry["path"] / "config.json").read_text())
    return Lab(
        path=entry["path"],
        tokenizer=tokenizer,
        template=Template.parse(tcfg.template, f"fewshot.prompts.{task}.template"),
        verbalizer=build_verbalizer(
            tokenizer, tcfg.verbalizer, data.labels, f"fewshot.prompts.{task}.verbalizer"
        ),
        data=data,
        max_length=min(fcfg.max_length, int(config.get("max_position_embeddings", 512))),
        query_tokens=fcfg.query_tokens,
        demo_tokens=fcfg.demonstrations.max_tokens,
        demos_per_class=fcfg.demonstrations.per_class,
        content_free=fcfg.content_free,
        train=fcfg.train.model_dump(),
        classifier_class=classifier_class,
        batch_size=fcfg.batch_size,
        bootstrap=Bootstrap.from_settings(settings),
    )
