"""Types of the config keys that matter, checked once, up front, by both command lines.

Hydra and `params.yaml` accept any value for any key, so `seed=abc` or
`finetune.shared.lr=abc` used to surface minutes later as a traceback deep in numpy or
torch. `validate_config(cfg)` checks the resolved config before any stage runs and raises
`ConfigError` naming the key, the expected type and the value given. Unknown keys are allowed
(the config grows by config alone); only the keys listed here are typed.
"""

from __future__ import annotations

import codecs
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StrictBool,
    ValidationError,
)

from emergent.errors import ConfigError

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]


def _codec(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError as err:
        raise ValueError(f"unknown encoding {name!r} (e.g. utf-8, latin-1, cp1252)") from err
    return name


Encoding = Annotated[str, AfterValidator(_codec)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class SplitConfig(_Section):
    validation: Fraction = 0.1
    test: Fraction = 0.1


class TaskDataConfig(_Section):
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "conll", "jsonl", "csv", "tsv", "txt"] = "auto"
    encoding: Encoding = "utf-8"
    max_rows: PositiveInt | None = None
    dedupe_heldout: StrictBool = False
    text_column: str | None = None
    label_column: str | None = None
    label_map: dict[str | int, str | int] | None = None
    skip_labels: list[str | int] | None = None
    labels: list[str | int] | None = None
    label_share: dict[str | int, Bounds] | None = None
    entity_types: list[str] | None = None
    min_rows: dict[str, NonNegativeInt] | None = None
    min_chars: NonNegativeInt | None = None
    max_chars: PositiveInt | None = None
    min_tokens: NonNegativeInt | None = None
    max_tokens: PositiveInt | None = None


class TaskConfig(_Section):
    """`tasks.<name>`: the keys a task kind reads that a typo would silently change."""

    decoding: Literal["argmax", "viterbi"] | None = None


class CorpusConfig(_Section):
    min_chars: NonNegativeInt = 1
    max_rows: PositiveInt | None = None
    validation_fraction: Fraction = 0.02


class FinetuneConfig(_Section):
    """`finetune.shared` and each `finetune.<task>` (every key optional in a task section)."""

    batch_size: PositiveInt | None = None
    max_length: PositiveInt | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    head_lr: Annotated[float, Field(gt=0)] | None = None
    weight_decay: Annotated[float, Field(ge=0)] | None = None
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    gradient_clip_val: Annotated[float, Field(ge=0)] | None = None
    # int: every N steps / N batches; float: a fraction of an epoch (types are only checked)
    val_check_interval: float | None = None
    limit_train_batches: float | None = None
    num_workers: NonNegativeInt | None = None
    label_all_tokens: StrictBool | None = None
    class_weights: StrictBool | None = None
    group_by_length: StrictBool | None = None
    pooling: Literal["auto", "cls", "mean"] | None = None
    word_shapes: StrictBool | Literal["auto"] | None = None


class PretrainConfig(_Section):
    batch_size: PositiveInt | None = None
    block_size: PositiveInt | None = None
    mlm_probability: Annotated[float, Field(gt=0, lt=1)] | None = None
    max_steps: int | None = None
    max_epochs: int | None = None
    val_check_interval: float | None = None
    warmup_ratio: Annotated[float, Field(ge=0, le=1)] | None = None


class DistillConfig(_Section):
    alpha: Annotated[float, Field(ge=0, le=1)]
    temperature: Annotated[float, Field(gt=0)]


class PruneConfig(_Section):
    levels: list[Annotated[float, Field(ge=0, lt=1)]] | None = None
    vocab: StrictBool | None = None
    importance_examples: PositiveInt | None = None
    recover_steps: NonNegativeInt | None = None
    distill: DistillConfig | None = None


class ExportConfig(_Section):
    """`export`: checked before a stage that may run for minutes reads a key deep inside."""

    max_metric_drop: Annotated[float, Field(ge=0)] | None = None
    parity_atol: Annotated[float, Field(gt=0)] | None = None
    per_channel: StrictBool | Literal["auto"] | None = None
    seq_length: PositiveInt | None = None
    prune: PruneConfig | None = None


class BootstrapConfig(_Section):
    resamples: PositiveInt
    confidence: Annotated[float, Field(gt=0, lt=1)]


class EvaluateConfig(_Section):
    bootstrap: BootstrapConfig | None = None


class FewshotConfig(_Section):
    precision: Literal["auto", "32-true", "32", "bf16-mixed", "bf16-true"] | None = None


class RootConfig(_Section):
    seed: int
    task: str | None = None


def _config_path(value: Any, loc: tuple[Any, ...]) -> list[str]:
    """The part of a pydantic error location that names config keys (a union's member tags,
    such as `int` or `constrained-float`, are not keys and are left out)."""
    parts = []
    for part in loc:
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and part < len(value)
        if not (in_dict or in_list):
            break
        value = value[part]
        parts.append(str(part))
    return parts


def _check(model: type[BaseModel], value: Any, prefix: str) -> None:
    """Validate one section; the first error becomes a ConfigError naming its full key."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(prefix, f"expected a mapping of settings, got {value!r}")
    try:
        model.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(p for p in [prefix, *_config_path(value, first["loc"])] if p)
        message = first["msg"].removeprefix("Value error, ").rstrip(".")
        raise ConfigError(key, f"{message}; got {first.get('input')!r}") from None


def validate_config(cfg: DictConfig) -> None:
    """Check the types of the keys that matter in a composed config (both CLIs call this
    before running a stage); raises ConfigError naming the first wrong key."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    _check(RootConfig, {k: plain.get(k) for k in ("seed", "task") if k in plain}, "")
    data = plain.get("data") or {}
    _check(SplitConfig, data.get("split"), "data.split")
    _check(CorpusConfig, data.get("corpus"), "data.corpus")
    for name in plain.get("tasks") or {}:
        _check(TaskDataConfig, data.get(name), f"data.{name}")
        _check(TaskConfig, (plain.get("tasks") or {}).get(name), f"tasks.{name}")
    finetune = plain.get("finetune") or {}
    for name, section in finetune.items():
        _check(FinetuneConfig, section, f"finetune.{name}")
    _check(PretrainConfig, plain.get("pretrain"), "pretrain")
    _check(ExportConfig, plain.get("export"), "export")
    _check(EvaluateConfig, plain.get("evaluate"), "evaluate")
    _check(FewshotConfig, plain.get("fewshot"), "fewshot")
