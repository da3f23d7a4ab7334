"""The search space of `conf/tune/` (`tune.space`): named dimensions over `finetune.<task>` keys.

Each dimension has a name (what Optuna, MLflow and the preset's comment show), the fine-tuning
key or keys it sets (dropout sets the hidden, attention and classifier rates together) and a
distribution. The keys must already exist in the task's merged fine-tuning config, so a typo
fails before the first trial instead of silently tuning nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emergent.errors import ConfigError
from emergent.schema import FinetuneShared

_MISSING = object()


@dataclass(frozen=True)
class Dimension:
    """One searched value: `keys` under `finetune.<task>`, drawn from low..high or choices."""

    name: str
    keys: tuple[str, ...]
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw this dimension's value for an Optuna trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.low is None or self.high is None:  # `parse_space` gives numeric ones both
            raise ValueError(f"tune.space.{self.name}: a {self.kind} range needs low and high")
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def parse_space(space: Mapping[str, Any], finetune: FinetuneShared) -> list[Dimension]:
    """`tune.space` as dimensions, checked against the task's fine-tuning settings (each key
    a dotted path into them, `dropout.attention`, looked up as Hydra overrides it)."""
    settings = OmegaConf.create(finetune.model_dump(by_alias=True))
    if not space:
        raise ConfigError("tune.space", "is empty: name at least one finetune key to search")
    dims = []
    for name, spec in space.items():
        where = f"tune.space.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(
                where, f"expected a mapping with keys and low/high or choices, got {spec!r}"
            )
        # A dimension's keys are not in the schema (`tune.space` is free-form there): they
        # are optional by kind and checked here, hence .get.
        keys = spec.get("keys") or spec.get("key")
        keys = [keys] if isinstance(keys, str) else list(keys or [])
        if not keys:
            raise ConfigError(f"{where}.keys", "names no finetune key")
        for key in keys:
            if OmegaConf.select(settings, str(key), default=_MISSING) is _MISSING:
                raise ConfigError(
                    f"{where}.keys", f"{key!r} is not a fine-tuning setting (see conf/finetune/)"
                )
        choices = spec.get("choices")
        if choices is not None:
            if not choices:
                raise ConfigError(f"{where}.choices", "is empty")
            dims.append(
                Dimension(str(name), tuple(map(str, keys)), "categorical", choices=tuple(choices))
            )
            continue
        kind = str(spec.get("type", "float"))
        if kind not in {"float", "int"}:
            raise ConfigError(f"{where}.type", f"must be float or int, got {kind!r}")
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(where, "needs numeric low and high (or choices)") from None
        log = bool(spec.get("log", False))
        if low > high or (log and low <= 0):
            raise ConfigError(where, f"bad range {low}..{high}{' on a log scale' if log else ''}")
        dims.append(Dimension(str(name), tuple(map(str, keys)), kind, low, high, log))
    return dims


def finetune_overrides(dims: list[Dimension], params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial parameters as `{finetune key: value}` (a dimension with several keys sets each)."""
    return {key: params[dim.name] for dim in dims if dim.name in params for key in dim.keys}


def apply_overrides(cfg: DictConfig, task: str, overrides: Mapping[str, Any]) -> DictConfig:
    """A copy of `cfg` with `finetune.<task>.<key>` set for each override (the task's section
    wins over `finetune.shared` when the two are merged)."""
    out = cfg.copy()
    for key, value in overrides.items():
        OmegaConf.update(out, f"finetune.{task}.{key}", value, merge=True, force_add=True)
    return out


def nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`{"dropout.hidden": 0.1}` -> `{"dropout": {"hidden": 0.1}}` (the preset's YAML shape)."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
