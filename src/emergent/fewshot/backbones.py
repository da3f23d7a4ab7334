"""The backbones of the few-shot lab: the configured models (pipeline folders, pretraining
snapshots, presets of conf/model/ with a `source`), each with its size and how much
pretraining it saw, for the protocol and the summary's model headers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from pydantic import ValidationError

from emergent.config import Paths
from emergent.errors import StageError
from emergent.schema import FewshotModel, ModelConfig, Settings


def count_parameters(folder: Path) -> int:
    """Parameter count from the safetensors header (no model instantiation)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return sum(math.prod(fh.get_slice(key).get_shape()) for key in fh.keys())  # noqa: SIM118 (not iterable)


def backbones(
    settings: Settings, paths: Paths, scaled: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Configured backbones (plus pretraining snapshots if asked) with size and tokens seen.

    A `path` entry is a masked-LM folder made by the pipeline; a `preset` entry is a model
    preset of conf/model/ loaded from its `source` (a causal LM among them). `scaled`: the
    entries of the presets the stage pretrained for `fewshot.scale.models`.
    """
    fcfg, pcfg = settings.fewshot, settings.pretrain
    tokens_per_step = pcfg.batch_size * min(pcfg.block_size, settings.model.max_length)
    entries = []
    given = [*fcfg.models, *(FewshotModel(name=s["name"], path=s["path"]) for s in scaled)]
    for index, entry in enumerate(given):
        key = f"fewshot.models[{index}]"
        methods: list[str] = list(entry.methods or fcfg.methods)
        ks = entry.k or fcfg.k
        if entry.preset:
            model_cfg = preset_model(entry.preset, key)
            if entry.source:
                model_cfg = model_cfg.model_copy(update={"source": entry.source})
            entries.append(
                {
                    "name": entry.name,
                    "key": key,
                    "model": model_cfg,
                    "family": model_cfg.family,
                    "methods": methods,
                    "k": ks,
                    "params": None,  # counted once loaded (a GGUF file has no safetensors)
                    "pretrain_steps": None,
                    "pretrain_tokens": model_cfg.training_tokens,
                }
            )
            continue
        folder = paths.inp(str(entry.path))
        if not (folder / "config.json").is_file():
            raise StageError(
                f"{key}.path: {folder} is not a model folder (run the pretrain stage first)"
            )
        steps = None
        metrics = folder.parent.parent / "metrics" / "pretrain.json"
        if metrics.is_file():
            steps = json.loads(metrics.read_text()).get("global_step")
        candidates = [(entry.name, folder, steps)]
        snapshot_dir = folder / "snapshots"
        if fcfg.include_snapshots and snapshot_dir.is_dir():
            for snap in sorted(snapshot_dir.iterdir(), key=lambda p: int(p.name.split("-")[-1])):
                candidates.append(
                    (f"{entry.name}@{snap.name}", snap, int(snap.name.split("-")[-1]))
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


def pretraining_note(entry: dict[str, Any]) -> str:
    """What the model's pretraining was, for the summary's model headers."""
    if entry["family"] == "causal":
        tokens = entry["pretrain_tokens"]
        return f"~{tokens:.2g} tokens (published)" if tokens else "unknown"
    if not entry["pretrain_steps"]:
        return "none"
    return f"{entry['pretrain_steps']} MLM steps (~{entry['pretrain_tokens']:,} tokens)"


def preset_model(preset: str, key: str) -> ModelConfig:
    """The `model` section of a preset in conf/model/, composed at run time (the run's own
    config holds only its own preset) and validated into `ModelConfig` here, its source
    checked: a preset with a bad key fails as one line naming it, not deep in a lab."""
    from hydra.errors import MissingConfigException

    from emergent.config import compose

    try:
        composed = compose([f"model={preset}"]).model
    except MissingConfigException:
        raise StageError(f"{key}.preset={preset!r}: no conf/model/{preset}.yaml") from None
    try:
        model_cfg = ModelConfig.model_validate(OmegaConf.to_container(composed, resolve=True))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StageError(
            f"{key}.preset={preset!r}: conf/model/{preset}.yaml: model.{where}: {first['msg']}"
        ) from None
    if not model_cfg.source:
        raise StageError(
            f"{key}.preset={preset!r} has no `source` (a from-scratch preset): add it to "
            "fewshot.scale.models instead, which pretrains it"
        )
    return model_cfg


def backbone_info(models: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per backbone what the report's model headers show: size, pretraining, family."""
    return {
        e["name"]: {
            "params": e["params"],
            "pretrain_steps": e["pretrain_steps"],
            "pretrain_tokens": e["pretrain_tokens"],
            "family": e["family"],
            "pretraining": pretraining_note(e),
        }
        for e in models
    }
