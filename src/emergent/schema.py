"""The config keys the code reads, with their types, checked once, up front, by both command lines.

Hydra and `params.yaml` accept any value for any key, and an added key (`+finetune.shared.
group_by_lenght=true`, misspelt) used to run a whole stage and be silently ignored. Before
any stage runs, `validate_config(cfg)` checks the resolved config against the models below
and raises `ConfigError` naming the full dotted key: a wrong type or value, or a key no code
reads ("unknown key", with the closest valid key as a suggestion).

Sections are closed (`_Section`: a key not declared is an error); the few places where any
key is valid by design are open (`_Open`): the keyword arguments of a Hydra `_target_`
(optimizer, scheduler, callbacks), a model's `config.json` overrides, MLflow experiment names,
label maps. Top-level sections this module does not know are left alone (a new config group
is new config, not a typo).

Adding a config key: add it to its YAML in conf/ (and, under `finetune.shared`, to
conf/finetune/task/inherit.yaml as an interpolation of it), then declare it here in the
section's model with the type the code reads it as, e.g. `pooling: Literal["cls", "mean"] =
"cls"` in `FinetuneShared`; every task's own section (`finetune.<task>`) is checked against
the same model. A key of a task definition (`tasks.<name>.<key>`, conf/tasks/) goes in
`TaskDefinition`, of a data source in `TaskDataConfig`; a new top-level section needs nothing
here until it is worth checking (then a model and a line in `RootBase`).
tests/unit/test_config.py checks that conf/ (every preset) and the schema agree.
"""

from __future__ import annotations

import codecs
import difflib
import functools
import re
import types
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union

from omegaconf import DictConfig, OmegaConf
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PlainValidator,
    PositiveFloat,
    PositiveInt,
    StrictBool,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from emergent.errors import ConfigError

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveShare = Annotated[float, Field(gt=0.0, le=1.0)]
Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]


def _batches(value: Any) -> int | float:
    """Lightning's reading of `val_check_interval` / `limit_*_batches`: an int is a count of
    batches, a float a fraction of the epoch (so 0.5 and 1 mean different things)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return value
    raise ValueError("expected an int > 0 (batches) or a float in (0, 1] (a fraction of an epoch)")


def _steps(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError("expected an int > 0: a number of training steps")


Batches = Annotated[int | float, PlainValidator(_batches)]
Steps = Annotated[int, PlainValidator(_steps)]


def _codec(name: str) -> str:
    try:
        codecs.lookup(name)
    except LookupError as err:
        raise ValueError(f"unknown encoding {name!r} (e.g. utf-8, latin-1, cp1252)") from err
    return name


Encoding = Annotated[str, AfterValidator(_codec)]


def _null_means(default: Any) -> BeforeValidator:
    """For a key conf/ may set to null meaning "the default": null reads as `default`, so the
    default is written here once and the code reads a plain value."""
    return BeforeValidator(lambda value: default if value is None else value)


class _Section(BaseModel):
    """A closed section: every key the code reads is declared; any other key is an error."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """A section whose extra keys are valid by design (a Hydra target's keyword arguments)."""

    model_config = ConfigDict(extra="allow")


class Target(_Open):
    """A node built with `hydra.utils.instantiate`: `_target_` and its keyword arguments."""

    target: str = Field(alias="_target_")


# --- root, paths, predict --------------------------------------------------------------------


class PathsConfig(_Section):
    input_dir: str | None = None
    assets_dir: str | None = None


class PredictConfig(_Section):
    text: str | list[str] | None = None
    file: str | None = None
    export_dir: str | None = None


class Headline(_Section):
    metric: str
    label: str
    mode: Literal["max", "min"]


class TaskDefinition(_Section):
    """`tasks.<name>`: a `Task` built from `_target_` (conf/tasks/<name>.yaml)."""

    target: str = Field(alias="_target_")
    headline: Headline
    card: dict[str, str] | None = None
    stride: NonNegativeInt | None = None  # token classification: overlap of long-text windows
    decoding: Literal["argmax", "viterbi"] | None = None  # token classification: tag decoding


# --- data ------------------------------------------------------------------------------------


class SplitConfig(_Section):
    validation: Fraction = 0.1
    test: Fraction = 0.1


class CorpusMinRows(_Section):
    """`data.corpus.min_rows`: the least number of rows of each corpus split."""

    train: NonNegativeInt = 1
    validation: NonNegativeInt = 1


class MinRows(CorpusMinRows):
    """`data.<task>.min_rows`: the least number of rows of each prepared split."""

    test: NonNegativeInt = 1


class UnlabeledSource(_Section):
    """`data.corpus.unlabeled[i]`: a source sets only what it needs (conf/ sets `path` and
    `text_column`); these defaults are the readers' (`emergent.data.formats`)."""

    path: str
    text_column: str = "text"
    where: dict[str, Any] | None = None
    format: Literal["auto", "conll", "jsonl", "csv", "tsv", "txt"] = "auto"
    encoding: Encoding = "utf-8"


class CorpusConfig(_Section):
    unlabeled: list[UnlabeledSource] = []
    min_chars: NonNegativeInt = 1
    max_rows: PositiveInt | None = None
    validation_fraction: Fraction = 0.02
    min_rows: CorpusMinRows = CorpusMinRows()


class TaskDataConfig(_Section):
    """`data.<task>`: where a task's data comes from and its quality gate. A task sets only
    the keys that apply to it (ner has no `text_column`, sentiment no `entity_types`), so
    every key has a default; code reads them as attributes and never repeats a default."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: Literal["auto", "conll", "jsonl", "csv", "tsv", "txt"] = "auto"
    encoding: Encoding = "utf-8"
    max_rows: PositiveInt | None = None
    dedupe_heldout: StrictBool = False
    text_column: str = "text"  # CSV/TSV columns; JSONL files always use `text` and `label`
    label_column: str = "label"
    label_map: dict[str | int, str | int] | None = None
    skip_labels: list[str | int] | None = None
    labels: list[str | int] | None = None
    label_share: dict[str | int, Bounds] | None = None
    entity_types: list[str] | None = None
    min_rows: MinRows = MinRows()
    min_chars: NonNegativeInt | None = None
    max_chars: PositiveInt | None = None
    min_tokens: NonNegativeInt | None = None
    max_tokens: PositiveInt | None = None
    # a folder of user feedback (train.jsonl, test.jsonl: examples in the task's own shape)
    feedback: str | None = None

    def files(self) -> dict[str, str]:
        """The splits given as files (`train`, `validation`, `test`), in that order."""
        given = {"train": self.train, "validation": self.validation, "test": self.test}
        return {split: source for split, source in given.items() if source}


def _task_section(section: BaseModel, base: type[BaseModel], key: str, name: str) -> Any:
    """The per-task field `name` of a section whose per-task fields `config_model` added to
    `base` at run time; a name that is not a task is refused naming `<key>.<name>`."""
    tasks = [n for n in type(section).model_fields if n not in base.model_fields]
    if name not in tasks:
        raise ConfigError(f"{key}.{name}", f"no such task section; the tasks are {tasks}")
    return getattr(section, name)


class DataBase(_Section):
    """`data`: these keys plus one `data.<task>` section per task (added by `config_model`,
    read through `task(name)`)."""

    prepared_dir: str = "data/prepared"
    split: SplitConfig = SplitConfig()
    corpus: CorpusConfig = CorpusConfig()

    def task(self, name: str) -> TaskDataConfig:
        """`data.<name>`; a task without a section reads as every default (so ingest names
        the missing `data.<name>.train`)."""
        section = _task_section(self, DataBase, "data", name)
        return section if section is not None else TaskDataConfig()


# --- model -----------------------------------------------------------------------------------


class TokenizerConfig(_Section):
    train: StrictBool
    lowercase: StrictBool
    vocab_size: PositiveInt | None = None  # required where `train` is true (checked below)
    # WordPiece's minimum count of a merge; null (a preset that does not train one): 2
    min_frequency: Annotated[PositiveInt, _null_means(2)] = 2

    @model_validator(mode="after")
    def _trained_has_size(self) -> TokenizerConfig:
        if self.train and self.vocab_size is None:
            raise ValueError("vocab_size: a trained tokenizer (train: true) needs a vocab_size")
        return self


class ModelConfig(_Section):
    name: str
    source: str | None = None
    # masked: a BERT-style encoder (MLM head, cloze prompts); causal: a decoder-only LM
    # (next-word prompts), which only the few-shot lab and sequence classification take.
    family: Literal["masked", "causal"]
    prompting: Literal["raw", "chat"]  # template as the whole input, or the model's chat turns
    training_tokens: PositiveFloat | None = None  # pretraining tokens where published
    pretrained: StrictBool
    max_length: PositiveInt
    tokenizer: TokenizerConfig
    config: dict[str, Any] | None = None  # overrides of the backbone's config.json (any key)


# --- pretrain --------------------------------------------------------------------------------


class PretrainOptimizer(_Section):
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    betas: Annotated[list[Fraction], Field(min_length=2, max_length=2)]
    eps: PositiveFloat


class PretrainHead(_Section):
    lr: PositiveFloat | None = None
    warmup_steps: NonNegativeInt = 0
    init_bias: Literal["unigram", "zeros"] = "unigram"


class PretrainConfig(_Section):
    batch_size: PositiveInt
    block_size: PositiveInt
    mlm_probability: Annotated[float, Field(gt=0, lt=1)]
    mask_replace_prob: Share
    random_replace_prob: Share
    optimizer: PretrainOptimizer
    warmup_ratio: Share
    head: PretrainHead | None = None
    dropout: Fraction | None = None
    gradient_clip_val: NonNegativeFloat
    # 0: skip training; -1 / null: max_epochs decides
    max_steps: Annotated[int, Field(ge=-1)] | None = None
    max_epochs: Annotated[PositiveInt, _null_means(1)] = 1  # when max_steps is null or -1
    snapshots: list[Fraction] = []
    # Pretraining is step-based: validate every N training steps (an int; the stage reads it
    # with int(), so a fraction of an epoch such as 0.5 would become 0).
    val_check_interval: Steps
    limit_val_batches: Batches
    checkpoint_every_n_steps: PositiveInt
    resume: StrictBool
    num_workers: NonNegativeInt
    max_train_blocks: PositiveInt | None = None


# --- finetune --------------------------------------------------------------------------------


class Callbacks(_Section):
    early_stopping: Target
    best_weights: Target


class TaskDataModuleConfig(_Section):
    """`datamodule`: `emergent.data.batches.TaskDataModule`'s settings (the rest come from the
    fine-tuning config at run time). A custom datamodule class declares its keys here."""

    target: str = Field(alias="_target_")
    group_by_length: StrictBool
    shuffle_batches: StrictBool
    num_workers: NonNegativeInt


class Dropout(_Section):
    hidden: Fraction
    attention: Fraction
    classifier: Fraction


class Freeze(_Section):
    embeddings: StrictBool
    layers: NonNegativeInt
    encoder: StrictBool
    unfreeze_at_epoch: NonNegativeInt | None = None


class Lora(_Section):
    r: PositiveInt
    alpha: PositiveFloat
    dropout: Fraction
    target_modules: list[str]


class FinetuneShared(_Section):
    """`finetune.shared`: every setting a fine-tuning run reads (stages/finetune.py,
    data/batches.py, models/classifier.py, export/recover.py)."""

    init: Literal["pretrained", "random"]
    strategy: Literal["full", "lora"]
    batch_size: PositiveInt
    max_length: PositiveInt
    # Passes over the training split; a fraction ends the run (and its decaying schedule)
    # part-way through the last pass (1.5: one and a half). -1: max_steps decides.
    max_epochs: Annotated[int, Field(ge=-1)] | Annotated[float, Field(gt=0, allow_inf_nan=False)]
    max_steps: Annotated[int, Field(ge=-1)] | None = None
    lr: PositiveFloat
    head_lr: PositiveFloat | None = None
    layer_lr_decay: Annotated[float, Field(gt=0, le=1)] = 1.0
    weight_decay: NonNegativeFloat
    warmup_ratio: Share
    gradient_clip_val: NonNegativeFloat
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.0  # 0: no weight averaging
    optimizer: Target
    scheduler: Target
    callbacks: Callbacks
    datamodule: TaskDataModuleConfig
    dropout: Dropout
    freeze: Freeze
    lora: Lora
    pooling: Literal["auto", "cls", "mean"]  # sequence tasks (models/pooling.py)
    word_shapes: StrictBool | Literal["auto"]  # token tasks (tasks/shapes.py)
    label_all_tokens: StrictBool
    class_weights: StrictBool
    crf: StrictBool  # token tasks: a CRF layer's loss and transition scores (models/crf.py)
    crf_lr: NonNegativeFloat  # the transition scores' learning rate (0: kept fixed)
    # int: validate every N training batches; float: a fraction of an epoch (Lightning's reading)
    val_check_interval: Batches
    # batches per epoch; the stage sizes the learning-rate schedule with int() of it
    limit_train_batches: PositiveInt | None = None

    @field_validator("val_check_interval")
    @classmethod
    def _fraction_is_validated(cls, every: int | float, info: ValidationInfo) -> int | float:
        """A fractional run stops part-way through its last pass, where Lightning validates
        only on its interval, counted from each epoch's start: with `val_check_interval: 1.0`
        the last half of a 1.5-epoch run would train and never be seen by the best-checkpoint
        choice. The last pass's share must be a whole number of intervals."""
        epochs = info.data.get("max_epochs")
        if isinstance(epochs, float) and epochs != int(epochs) and isinstance(every, float):
            last = epochs - int(epochs)
            if abs(last / every - round(last / every)) > 1e-6 or last < every:
                raise ValueError(
                    f"max_epochs {epochs} would end between validations; use a fraction of an "
                    f"epoch that divides its last {last:g} (e.g. {last:g})"
                )
        return every


class FinetuneBase(_Section):
    """`finetune`: `shared` plus one `finetune.<task>` section per task (added by
    `config_model`, read through `task(name)`)."""

    shared: FinetuneShared

    def task(self, name: str) -> FinetuneShared:
        """What task `name` fine-tunes with: `finetune.<name>` over `finetune.shared`.

        Composition fills each task section from `shared` (conf/finetune/task/inherit.yaml),
        so the section is complete; it is laid over `shared` all the same, so that a key added
        to `finetune.shared` alone (`+finetune.shared.optimizer.momentum=0.9`, a Hydra target's
        keyword argument, or a key inherit.yaml does not list) still reaches every task. Only
        the keys the task section was given override (`exclude_unset`): a schema default
        there does not undo a shared setting. Without a task section: `shared`."""
        section = _task_section(self, FinetuneBase, "finetune", name)
        if section is None:
            return self.shared
        merged = _deep_merge(
            self.shared.model_dump(by_alias=True),
            section.model_dump(by_alias=True, exclude_unset=True),
        )
        return FinetuneShared.model_validate(merged)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` laid over `base` as Hydra composes (`OmegaConf.merge`: mappings key by key, any
    other value, a list included, replaced)."""
    merged = OmegaConf.to_container(OmegaConf.merge(base, over))
    assert isinstance(merged, dict)
    return {str(k): v for k, v in merged.items()}


class TasksBase(_Section):
    """`tasks`: one `tasks.<name>` definition per task (added by `config_model`)."""

    def task(self, name: str) -> TaskDefinition:
        """`tasks.<name>`."""
        section: TaskDefinition = _task_section(self, TasksBase, "tasks", name)
        return section

    def names(self) -> list[str]:
        """The tasks of this config, in conf/'s order."""
        return [n for n in type(self).model_fields if n not in TasksBase.model_fields]


# --- trainer ---------------------------------------------------------------------------------

# lightning.Trainer's arguments (2.6; tests/unit/test_config.py compares with the installed one).
TRAINER_ARGUMENTS = [
    "accelerator",
    "strategy",
    "devices",
    "num_nodes",
    "precision",
    "logger",
    "callbacks",
    "fast_dev_run",
    "max_epochs",
    "min_epochs",
    "max_steps",
    "min_steps",
    "max_time",
    "limit_train_batches",
    "limit_val_batches",
    "limit_test_batches",
    "limit_predict_batches",
    "overfit_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
    "num_sanity_val_steps",
    "log_every_n_steps",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "deterministic",
    "benchmark",
    "inference_mode",
    "use_distributed_sampler",
    "profiler",
    "detect_anomaly",
    "barebones",
    "plugins",
    "sync_batchnorm",
    "reload_dataloaders_every_n_epochs",
    "default_root_dir",
    "enable_autolog_hparams",
    "model_registry",
]


# Trainer arguments the stages set themselves, and the config keys that set them
# (`trainer.max_epochs` is an error naming `finetune.<task>.max_epochs`).
RESERVED_TRAINER_KEYS = {
    "max_steps": "finetune.<task>.max_steps or pretrain.max_steps",
    "max_epochs": "finetune.<task>.max_epochs or pretrain.max_epochs",
    "val_check_interval": "finetune.<task>.val_check_interval or pretrain.val_check_interval",
    "check_val_every_n_epoch": "finetune.<task>.val_check_interval",
    "limit_val_batches": "pretrain.limit_val_batches",
    "limit_train_batches": "finetune.<task>.limit_train_batches",
    "gradient_clip_val": "finetune.<task>.gradient_clip_val or pretrain.gradient_clip_val",
    "callbacks": "finetune.<task>.callbacks",
    "logger": "the mlflow config group",
    "default_root_dir": "the stage's output folder (not configurable)",
    "enable_checkpointing": "the stage (not configurable)",
    "num_sanity_val_steps": "the stage (not configurable)",
    "enable_model_summary": "the stage (not configurable)",
}


class TrainerTyped(_Section):
    accelerator: str = "cpu"
    devices: PositiveInt | Literal["auto"] | list[NonNegativeInt] | str = 1
    num_nodes: PositiveInt = 1
    strategy: str = "auto"
    precision: Literal["auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed"] = "auto"
    log_every_n_steps: PositiveInt | None = None
    enable_progress_bar: StrictBool | None = None
    # not Lightning's: where no bar is drawn, a progress line at most this often (training.py)
    progress_log_seconds: PositiveFloat = 60.0
    deterministic: StrictBool | Literal["warn"] | None = None


# `trainer`: passed to `lightning.Trainer`: any of its arguments the stages do not set
# themselves (the typed ones above, the rest as Lightning takes them). A type checker sees only
# the typed part: the other fields are made at run time from Lightning's signature.
if TYPE_CHECKING:
    TrainerConfig = TrainerTyped
else:
    _untyped_trainer_fields: dict[str, Any] = {
        name: (Any, None)
        for name in TRAINER_ARGUMENTS
        if name not in TrainerTyped.model_fields and name not in RESERVED_TRAINER_KEYS
    }
    TrainerConfig = create_model("TrainerConfig", __base__=TrainerTyped, **_untyped_trainer_fields)


# --- evaluate, export, fewshot ---------------------------------------------------------------


class BootstrapConfig(_Section):
    resamples: PositiveInt
    confidence: Annotated[float, Field(gt=0, lt=1)]


class EvaluateConfig(_Section):
    bootstrap: BootstrapConfig


class BenchConfig(_Section):
    batch1_runs: PositiveInt
    batch32_runs: PositiveInt
    warmup: NonNegativeInt


class DistillConfig(_Section):
    alpha: Share
    temperature: PositiveFloat


class PruneConfig(_Section):
    levels: list[Fraction]
    vocab: StrictBool = False
    scan: Literal["until_chosen", "all"] = "until_chosen"
    importance_examples: PositiveInt
    recover_steps: NonNegativeInt = 0
    distill: DistillConfig | None = None
    bench: BenchConfig


class ExportConfig(_Section):
    """`export`: checked before a stage that may run for minutes reads a key deep inside."""

    opset: PositiveInt
    max_metric_drop: NonNegativeFloat
    drop_gate: Literal["estimate", "significant"] = "significant"
    parity_atol: PositiveFloat
    per_channel: StrictBool | Literal["auto"]
    skip_layer_norm: StrictBool = False
    seq_length: PositiveInt
    bench: BenchConfig
    prune: PruneConfig | None = None


class Prompt(_Section):
    template: str
    verbalizer: dict[str, str]


FewshotMethod = Literal[
    "zero_shot",
    "zero_shot_calibrated",
    "in_context",
    "in_context_calibrated",
    "head",
    "prompt",
    "prompt_self_training",
]


class FewshotTrain(_Section):
    steps: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    new_params_lr: PositiveFloat
    weight_decay: NonNegativeFloat
    warmup_ratio: Share
    eval_every: PositiveInt


class FewshotDemonstrations(_Section):
    per_class: PositiveInt
    max_tokens: PositiveInt


class FewshotModel(_Section):
    name: str
    path: str | None = None  # a masked-LM folder made by the pipeline (relative: stage inputs)
    preset: str | None = None  # or a model preset of conf/model/ (its `source`)
    source: str | None = None  # with `preset`: another source for the same kind of model
    methods: list[FewshotMethod] | None = None  # null: fewshot.methods
    k: list[NonNegativeInt] | None = None  # null: fewshot.k

    @model_validator(mode="after")
    def _one_location(self) -> FewshotModel:
        if (self.path is None) == (self.preset is None):
            raise ValueError("give exactly one of `path` (a model folder) or `preset`")
        return self


class FewshotComparison(_Section):
    a: str  # <model>/<method>/<k>
    b: str


class FewshotLora(_Section):
    r: PositiveInt
    alpha: PositiveInt
    dropout: Fraction
    target_modules: list[str]


class FewshotSelfTraining(_Section):
    unlabelled: PositiveInt  # training texts the prompt-fine-tuned model labels
    per_class: PositiveInt  # of those, the most confident kept per predicted label
    steps: PositiveInt  # the second fine-tuning, on the k-shot set and the kept texts


class FewshotCausal(_Section):
    adapter: Literal["lora", "full"]  # prompt fine-tuning: LoRA adapters or every weight
    lora: FewshotLora
    train: FewshotTrain
    text_tokens: PositiveInt  # each query or demonstration text is cut to this many tokens
    batch_size: PositiveInt
    # full prompt fine-tuning: shares of the fine-tuned weights (against the pretrained ones)
    # tried on dev, the best kept; [1.0]: the fine-tuned weights as they are
    interpolate: Annotated[list[PositiveShare], Field(min_length=1)] = [1.0]
    self_training: FewshotSelfTraining  # method prompt_self_training

    @field_validator("interpolate")
    @classmethod
    def _mixing_needs_every_weight(cls, shares: list[float], info: ValidationInfo) -> list[float]:
        """LoRA leaves the base weights as they were: there is nothing to mix them with."""
        if shares != [1.0] and info.data.get("adapter") != "full":
            raise ValueError("mixing weights needs fewshot.causal.adapter=full")
        return shares


class FewshotScale(_Section):
    models: list[str] = []
    overrides: list[str] = []


class FewshotConfig(_Section):
    task: str
    methods: list[FewshotMethod]
    k: list[NonNegativeInt]
    seeds: list[int]
    test_size: PositiveInt | None = None
    batch_size: PositiveInt
    precision: Literal["auto", "32-true", "32", "bf16-mixed", "bf16-true"]
    max_length: PositiveInt
    query_tokens: PositiveInt
    demonstrations: FewshotDemonstrations
    content_free: list[str]
    train: FewshotTrain
    prompt_demonstrations: StrictBool
    models: list[FewshotModel]
    include_snapshots: StrictBool
    scale: FewshotScale
    prompts: dict[str, Prompt]  # masked LMs: cloze templates
    compare: list[FewshotComparison] = []
    causal: FewshotCausal
    causal_prompts: dict[str, Prompt]  # causal LMs: next-word templates ending in {mask}


# --- mlflow, serve, monitor ------------------------------------------------------------------


class MlflowConfig(_Section):
    tracking_uri: str
    artifact_dir: str
    enabled: StrictBool = True
    experiments: dict[str, str] = {}  # stage group -> experiment name (any group)
    experiment_kind: str | None = None


class ServeBatching(_Section):
    max_batch_size: PositiveInt
    max_wait_ms: NonNegativeFloat


class ServeLimits(_Section):
    max_body_bytes: PositiveInt
    max_texts: PositiveInt
    max_chars: PositiveInt
    rate_per_second: NonNegativeFloat
    rate_burst: PositiveFloat
    max_queue: PositiveInt
    retry_after_s: NonNegativeFloat


class ServeStore(_Section):
    path: str
    sample_rate: Share
    max_pending: PositiveInt
    feedback_uri: Annotated[str, Field(pattern=r"^postgres(ql)?://")] | None = None


class ServeMasking(_Section):
    enabled: StrictBool
    ner_task: str | None = None
    entity_map: dict[str, str] = {}
    min_score: Share
    placeholders: dict[str, str] = {}


class ServeConfig(_Section):
    host: str
    port: Annotated[int, Field(ge=0, le=65535)]
    keys_file: str
    tasks: list[str] | None = None
    source: Literal["local", "registry"]
    export_root: str | None = None
    alias: str
    threads: PositiveInt
    warmup_batches: NonNegativeInt
    batching: ServeBatching
    limits: ServeLimits
    store: ServeStore
    masking: ServeMasking
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class MonitorConfig(_Section):
    window: str
    export_since_hours: PositiveFloat
    min_rows: PositiveInt
    p_value: Annotated[float, Field(gt=0, lt=1)]
    drift_share: Share
    fail_on_drift: StrictBool
    reference_max_rows: PositiveInt


class TuneConfig(_Section):
    """`tune` (conf/tune/): the Optuna search of `python -m emergent tune`. The space's
    dimensions are checked against the task's fine-tuning keys by `tuning.parse_space`."""

    storage: str
    study_name: str | None = None
    n_trials: PositiveInt
    timeout: PositiveFloat | None = None
    sampler: Target
    pruner: Target | None = None
    space: dict[str, Any]
    # Replace the committed preset (`preset`, default conf/experiment/<task>_tuned.yaml) with
    # the study's best trial; without it the preset goes into the run folder only.
    adopt: StrictBool = False
    preset: str | None = None
    keep_models: StrictBool


class PromoteConfig(_Section):
    """`promote`: the promotion gate's rule (emergent.registry.gate)."""

    tolerance: NonNegativeFloat
    min_feedback_test: NonNegativeInt
    confidence: Annotated[float, Field(gt=0, lt=1)]
    resamples: PositiveInt
    reports_dir: str


class FeedbackConfig(_Section):
    dir: str
    test_percent: Annotated[int, Field(ge=0, le=100)]


class LoopExperiment(_Section):
    """`loop.experiment`: how the loop trains a challenger (a DVC experiment in the workspace)."""

    command: Annotated[list[str], Field(min_length=1)]
    targets: list[str]
    timeout_s: PositiveFloat


class LoopConfig(_Section):
    """`loop`: one iteration of the continuous-training loop (emergent.commands.loop)."""

    min_new_examples: PositiveInt
    force: StrictBool
    service_url: Annotated[str, Field(pattern=r"^https?://")] | None
    admin_key_env: Annotated[str, Field(min_length=1)]
    lock_file: str
    reload_timeout_s: PositiveFloat
    poll_interval_s: PositiveFloat
    reports_dir: str
    experiment: LoopExperiment


def _distinct(values: list[int]) -> list[int]:
    if len(set(values)) != len(values):
        raise ValueError("needs distinct seeds (no repeats)")
    return values


class SeedsConfig(_Section):
    """`seeds` (conf/seeds/): the seeds `python -m emergent seeds` fine-tunes a task with."""

    values: Annotated[list[int], Field(alias="list", min_length=1), AfterValidator(_distinct)]
    keep_models: StrictBool  # keep each seed's fine-tuned model under seeds/<task>/seed-<s>/


class VersusConfig(_Section):
    """`versus` (conf/versus/): the fine-tuned model folders `python -m emergent versus` puts
    side by side (the first is the reference) and the split it scores them on."""

    models: list[str]
    split: Literal["validation", "test"]


# --- the whole config ------------------------------------------------------------------------


class RootBase(_Open):
    """The composed config. Sections named here are closed; a top-level section this module
    does not declare is left alone (extra="allow")."""

    seed: int
    task: str | None = None
    tasks: TasksBase
    data: DataBase
    finetune: FinetuneBase
    paths: PathsConfig = PathsConfig()
    predict: PredictConfig = PredictConfig()
    model: ModelConfig
    pretrain: PretrainConfig
    trainer: TrainerConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    fewshot: FewshotConfig
    mlflow: MlflowConfig
    serve: ServeConfig
    monitor: MonitorConfig
    tune: TuneConfig
    promote: PromoteConfig
    feedback: FeedbackConfig
    loop: LoopConfig
    seeds: SeedsConfig
    versus: VersusConfig


# The validated config every stage receives (`run_stage(..., settings=)`). Its per-task
# sections exist only at run time (`config_model`), so code reads them through the typed
# accessors: `settings.data.task(name)`, `settings.finetune.task(name)`,
# `settings.tasks.task(name)`.
Settings = RootBase


def config_model(task_names: list[str]) -> type[Settings]:
    """The schema of a config whose tasks are `task_names`: `tasks.<name>`, `data.<name>` and
    `finetune.<name>` exist for those names only (`data.nerr` is a typo, not a section)."""
    # Field maps made at run time are (annotation, default) pairs, which mypy cannot type as
    # pydantic's `TypeForm` arguments; hence `Any` values.
    per_task: dict[str, Any] = {name: (TaskDefinition, ...) for name in task_names}
    tasks = create_model("Tasks", __base__=TasksBase, **per_task)
    per_data: dict[str, Any] = {n: (TaskDataConfig | None, None) for n in task_names}
    data = create_model("Data", __base__=DataBase, **per_data)
    # a task's section is complete (conf/finetune/task/inherit.yaml fills it from shared),
    # so it is checked as `shared` is: `finetune.ner.batch_size=null` is an error
    per_finetune: dict[str, Any] = {n: (FinetuneShared | None, None) for n in task_names}
    finetune = create_model("Finetune", __base__=FinetuneBase, **per_finetune)
    return create_model(
        "EmergentConfig", __base__=RootBase, tasks=(tasks, ...), data=(data, ...),
        finetune=(finetune, ...),
    )  # fmt: skip


# --- errors: the full dotted key, and the closest valid key for an unknown one ---------------


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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, dict):
        args = typing.get_args(annotation)
        args = args[1:] if origin is dict else args
        return [m for arg in args for m in _models_in(arg)]
    return []


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a model declares, its nested sections' keys included."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        out.append(key)
        for sub in _models_in(field.annotation):
            out.extend(_keys(sub, f"{key}."))
    return out


def _strip(annotation: Any) -> Any:
    """An annotation without `Annotated` and, of a union, the member that holds sections."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif typing.get_origin(annotation) in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if _models_in(a)]
            annotation = members[0] if members else None
        else:
            return annotation


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The model holding the keys at `path` (dict keys and list indices stepped over)."""
    annotation: Any = model
    for part in path:
        annotation = _strip(annotation)
        if typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]  # `part` is a dict key or an index
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        fields = {f.alias or n: f for n, f in annotation.model_fields.items()}
        if part not in fields:
            return None
        annotation = fields[part].annotation
    models = _models_in(annotation)
    return models[0] if models else None


def suggest(model: type[BaseModel], path: list[str], key: str) -> str | None:
    """The closest valid key to an unknown `key` under `path`: a sibling first, else a key
    nested deeper in the same section (a key put at the wrong level)."""
    holder = _model_at(model, path)
    if holder is None:
        return None
    keys = _keys(holder)
    siblings = [k for k in keys if "." not in k]
    close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if not close:
        by_leaf: dict[str, str] = {}
        for k in keys:
            by_leaf.setdefault(k.rsplit(".", 1)[-1], k)
        leaf = difflib.get_close_matches(key, list(by_leaf), n=1, cutoff=0.75)
        close = [by_leaf[leaf[0]]] if leaf else []
    return ".".join([*path, close[0]]) if close else None


def _config_error(model: type[BaseModel], plain: dict, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    path = _config_path(plain, first["loc"])
    if first["type"] in ("extra_forbidden", "missing") and len(first["loc"]) > len(path):
        path.append(str(first["loc"][len(path)]))
    key = ".".join(path)
    if first["type"] == "extra_forbidden":
        if path[0] == "trainer" and path[-1] in RESERVED_TRAINER_KEYS:
            use = RESERVED_TRAINER_KEYS[path[-1]]
            return ConfigError(key, f"set by each stage, not in trainer: use {use} instead")
        hint = suggest(model, path[:-1], path[-1])
        return ConfigError(key, "unknown key" + (f"; did you mean {hint}?" if hint else ""))
    if first["type"] == "missing":
        return ConfigError(key, "missing (the code reads this key)")
    message = first["msg"].removeprefix("Value error, ").rstrip(".")
    return ConfigError(key, f"{message}; got {first.get('input')!r}")


def validate_config(cfg: DictConfig) -> Settings:
    """Check a composed config against the schema before any stage runs (both CLIs call
    this); returns the validated, typed config the stages read, raises ConfigError naming
    the first bad key."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    names = list(plain.get("tasks") or {})
    model = config_model([n for n in names if isinstance(n, str)])
    try:
        return model.model_validate(plain)
    except ValidationError as err:
        raise _config_error(model, plain, err) from None


_Model = TypeVar("_Model", bound=BaseModel)


@functools.cache
def _wrapped(model: type[BaseModel], key: str) -> type[BaseModel]:
    """A one-field root holding section `model` at `key`, so its errors carry the full key."""
    fields: dict[str, Any] = {key: (model, ...)}
    return create_model(f"Only_{key}", __base__=_Section, **fields)


def validate_section(model: type[_Model], plain: dict[str, Any], key: str) -> _Model:
    """One top-level section (`plain`, section `key` of a composed config) checked alone, for
    code that holds only the composed config: the same one-line errors as `validate_config`
    (the full dotted key, the closest valid key for an unknown one, a trainer key a stage
    sets itself)."""
    root = _wrapped(model, key)
    try:
        section: _Model = getattr(root.model_validate({key: plain}), key)
    except ValidationError as err:
        raise _config_error(root, {key: plain}, err) from None
    return section


def unknown_override(err: Exception, cfg: DictConfig) -> ConfigError | None:
    """Hydra's refusal of `a.b.typo=v` (a key the config does not declare, given without
    `+`) as one line naming the key and the closest valid one; None for other errors."""
    text = f"{err} {err.__cause__ or ''}"
    found = re.search(r"Could not override '([^']+)'", text)
    if not found or "not in struct" not in text:
        return None
    key = found.group(1)
    path = key.split(".")
    plain = OmegaConf.to_container(cfg, resolve=False)
    names = list(plain.get("tasks") or {}) if isinstance(plain, dict) else []
    hint = suggest(config_model([str(n) for n in names]), path[:-1], path[-1])
    if hint == key:  # a valid key that conf/ does not set (a Lightning argument, say)
        return ConfigError(key, f"not set in conf/, so add it with a plus: +{key}=...")
    return ConfigError(key, "unknown key" + (f"; did you mean {hint}?" if hint else ""))
