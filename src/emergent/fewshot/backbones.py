"""The backbones of the few-shot lab: the configured models (pipeline folders, pretraining
snapshots, presets of conf/model/ with a `source`), each with its size and how much
pretraining it saw, for the protocol and the summary's model headers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emergent.config import Paths, plain_dict
from emergent.errors import StageError


def count_parameters(folder: Path) -> int:
    """Parameter count from the safetensors header (no model instantiation)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return sum(math.prod(fh.get_slice(key).get_shape()) for key in fh.keys())  # noqa: SIM118 (not iterable)


def backbones(cfg: DictConfig, paths: Paths, scaled: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Configured backbones (plus pretraining snapshots if asked) with size and tokens seen.

    A `path` entry is a masked-LM folder made by the pipeline; a `preset` entry is a model
    preset of conf/model/ loaded from its `source` (a causal LM among them). `scaled`: the
    entries of the presets the stage pretrained for `fewshot.scale.models`.
    """
    fcfg, pcfg = cfg.fewshot, cfg.pretrain
    tokens_per_step = int(pcfg.batch_size) * min(int(pcfg.block_size), int(cfg.model.max_length))
    entries = []
    configured = [plain_dict(e, f"fewshot.models[{i}]") for i, e in enumerate(fcfg.models)]
    given: list[dict[str, Any]] = [*configured, *scaled]
    for index, entry in enumerate(given):
        key = f"fewshot.models[{index}]"
        methods = [str(m) for m in (entry.get("methods") or fcfg.methods)]
        ks = [int(k) for k in (entry.get("k") or fcfg.k)]
        if entry.get("preset"):
            model_cfg = preset_model(str(entry["preset"]), key)
            if entry.get("source"):
                model_cfg.source = str(entry["source"])
            entries.append(
                {
                    "name": str(entry["name"]),
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
        folder = paths.inp(str(entry["path"]))
        if not (folder / "config.json").is_file():
            raise StageError(
                f"{key}.path: {folder} is not a model folder (run the pretrain stage first)"
            )
        steps = None
        metrics = folder.parent.parent / "metrics" / "pretrain.json"
        if metrics.is_file():
            steps = json.loads(metrics.read_text()).get("global_step")
        candidates = [(str(entry["name"]), folder, steps)]
        snapshot_dir = folder / "snapshots"
        if fcfg.get("include_snapshots") and snapshot_dir.is_dir():
            for snap in sorted(snapshot_dir.iterdir(), key=lambda p: int(p.name.split("-")[-1])):
                candidates.append(
                    (f"{entry['name']}@{snap.name}", snap, int(snap.name.split("-")[-1]))
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
