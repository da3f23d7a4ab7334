"""The typed config stages receive (`emergent.schema.Settings`): per-task sections through
accessors that refuse a name that is not a task, and defaults that live in the schema only."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import open_dict

from emergent.config import Paths
from emergent.errors import ConfigError, DataError
from emergent.schema import TaskDataConfig
from emergent.stages import run_stage
from tests.conftest import ROOT, smoke_cfg, smoke_settings
from tests.unit.test_tasks import NER, SENT


def test_task_accessors_return_each_tasks_typed_section() -> None:
    settings = smoke_settings("data.sentiment.max_rows=7", "finetune.ner.lr=0.003")
    assert settings.tasks.names() == ["ner", "sentiment", "debate"]
    assert settings.data.task("sentiment").max_rows == 7
    assert settings.data.task("ner").max_rows == 300  # the smoke preset's
    assert settings.finetune.task("ner").lr == 0.003
    assert settings.tasks.task("ner").headline.mode == "max"


@pytest.mark.parametrize("section", ["data", "finetune", "tasks"])
def test_a_name_that_is_not_a_task_is_refused_naming_the_section(section: str) -> None:
    settings = smoke_settings()
    accessor = getattr(settings, section).task
    with pytest.raises(ConfigError, match=rf"^{section}\.nerr: no such task section; the tasks "
                       r"are \['ner', 'sentiment', 'debate'\]"):  # fmt: skip
        accessor("nerr")
    with pytest.raises(ConfigError, match=rf"^{section}\.split: "):  # a key, not a task
        accessor("split")


def test_read_takes_its_defaults_from_the_schema(tmp_path: Path) -> None:
    # No encoding, text_column or label_column configured: TaskDataConfig's defaults
    # (utf-8, `text`, `label`) are what the readers get.
    table = tmp_path / "train.tsv"
    table.write_text("text\tlabel\ncafé crème\tpos\n", encoding="utf-8")
    cfg = TaskDataConfig(train=str(table))
    assert (cfg.encoding, cfg.text_column, cfg.label_column) == ("utf-8", "text", "label")
    examples, skipped = SENT.read(table, "tsv", cfg, "train.tsv")
    assert examples == [{"text": "café crème", "label": "pos"}] and skipped == 0
    conll = tmp_path / "train.conll"
    conll.write_text("Zoë\tB-person\n", encoding="utf-8")
    examples, _ = NER.read(conll, "conll", TaskDataConfig(train=str(conll)), "train.conll")
    assert examples == [{"tokens": ["Zoë"], "tags": ["B-person"]}]
    # a configured value is read, not the default: the same bytes in cp1252
    table.write_text("text\tlabel\ncafé crème\tpos\n", encoding="cp1252")
    with pytest.raises(DataError, match=r"train\.tsv.*utf-8"):
        SENT.read(table, "tsv", cfg, "train.tsv")
    examples, _ = SENT.read(table, "tsv", TaskDataConfig(encoding="cp1252"), "train.tsv")
    assert examples[0]["text"] == "café crème"


def test_run_stage_validates_a_config_it_was_not_given_checked(tmp_path: Path) -> None:
    # A caller that made its own config (a benchmark, a sub-run) gets it checked before the
    # stage starts: a misspelt data key is one error naming it, and nothing is written.
    cfg = smoke_cfg()
    with open_dict(cfg):
        cfg.data.ner.encodng = "latin-1"
    with pytest.raises(ConfigError, match=r"data\.ner\.encodng: unknown key; did you mean "
                       r"data\.ner\.encoding\?"):  # fmt: skip
        run_stage("ingest", cfg, Paths(ROOT, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_min_rows_defaults_per_split_and_refuses_a_misspelt_split() -> None:
    from emergent.data.quality import min_rows

    given = TaskDataConfig.model_validate({"min_rows": {"test": 20}})
    splits = ("train", "validation", "test", "feedback_test")  # the last: not configurable
    assert [min_rows(given, s) for s in splits] == [1, 1, 20, 1]
    with pytest.raises(ConfigError, match=r"^data\.ner\.min_rows\.tset: unknown key; did you "
                       r"mean data\.ner\.min_rows\.test\?"):  # fmt: skip
        smoke_settings("+data.ner.min_rows.tset=3")


def test_a_task_section_lays_only_the_keys_it_was_given_over_shared() -> None:
    """A task section without a key (here `ema_decay`, removed) takes shared's value, not the
    schema default; a key added to shared alone reaches every task; the task's own keys win."""
    settings = smoke_settings(
        "~finetune.ner.ema_decay",
        "finetune.shared.ema_decay=0.5",
        "+finetune.shared.optimizer.amsgrad=true",
        "finetune.sentiment.lr=0.003",
    )
    ner, sentiment = settings.finetune.task("ner"), settings.finetune.task("sentiment")
    assert ner.ema_decay == 0.5 and sentiment.ema_decay == 0.5
    assert ner.optimizer.model_dump(by_alias=True)["amsgrad"] is True
    assert sentiment.lr == 0.003 and ner.lr == settings.finetune.shared.lr
    assert sentiment.pooling == "mean" != settings.finetune.shared.pooling  # smoke: its own


@pytest.mark.parametrize("preset", ["cpu", "ddp", "gpu"])
def test_build_trainer_passes_lightning_what_trainer_sets(preset: str) -> None:
    """The typed `trainer` hands Lightning exactly the keys conf/ sets, with their values (a
    typed default such as `num_nodes` is not added where a preset leaves it out)."""
    from omegaconf import OmegaConf

    from emergent.training import trainer_settings

    cfg = smoke_cfg(f"trainer={preset}")
    typed = smoke_settings(f"trainer={preset}").trainer
    composed = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert typed.model_dump(exclude_unset=True) == composed
    assert trainer_settings(cfg.trainer).model_dump(exclude_unset=True) == composed


@pytest.mark.parametrize(
    ("epochs", "steps", "lightning_epochs", "lightning_steps"),
    [("2", 20, 2, -1), ("1.5", 15, 2, 15), ("0.25", 3, 1, 3)],
)
def test_a_fractional_epoch_count_ends_the_run_and_its_schedule_part_way(
    epochs: str, steps: int, lightning_epochs: int, lightning_steps: int
) -> None:
    """Lightning stops after whole epochs only; `max_epochs: 1.5` must still stop (and decay
    the rate to zero) after one and a half passes: 10 batches an epoch here."""
    from emergent.models.finetuning import total_steps
    from emergent.training import finetune_trainer

    fcfg = smoke_settings(
        f"finetune.sentiment.max_epochs={epochs}",
        "finetune.sentiment.limit_train_batches=null",
        "finetune.sentiment.max_steps=-1",
        "finetune.sentiment.val_check_interval=0.25",
    ).finetune.task("sentiment")
    schedule = total_steps(fcfg, train_rows=10 * fcfg.batch_size, world=1)
    assert schedule == steps
    trainer = finetune_trainer(smoke_settings().trainer, fcfg, [], False, ROOT, schedule)
    assert (trainer.max_epochs, trainer.max_steps) == (lightning_epochs, lightning_steps)


def test_a_fractional_run_must_end_on_a_validation() -> None:
    """Validating once an epoch, the last half of 1.5 epochs would train unseen by the best-
    checkpoint choice; an interval that divides the run (0.5, 0.25) or in steps is accepted."""
    with pytest.raises(
        ConfigError,
        match=r"^finetune\.sentiment\.val_check_interval: max_epochs 1\.5 would end between "
        r"validations; .* its last 0\.5 \(e\.g\. 0\.5\); got 1\.0$",
    ):
        smoke_settings("finetune.sentiment.max_epochs=1.5").finetune.task("sentiment")
    with pytest.raises(ConfigError, match=r"max_epochs 1\.25 would end between validations"):
        smoke_settings(
            "finetune.sentiment.max_epochs=1.25", "finetune.sentiment.val_check_interval=0.5"
        ).finetune.task("sentiment")
    # Validations count from each epoch's start: 1.3 epochs end on the check at 0.3.
    for epochs, every in (("1.5", "0.5"), ("1.5", "0.25"), ("1.5", "7"), ("1.3", "0.3")):
        fcfg = smoke_settings(
            f"finetune.sentiment.max_epochs={epochs}",
            f"finetune.sentiment.val_check_interval={every}",
        ).finetune.task("sentiment")
        assert str(fcfg.max_epochs) == epochs and str(fcfg.val_check_interval) == every
    with pytest.raises(ConfigError, match=r"max_epochs: Input should be a finite number"):
        smoke_settings("finetune.sentiment.max_epochs=inf").finetune.task("sentiment")


def test_null_tokenizer_and_epoch_settings_read_as_the_schema_defaults() -> None:
    settings = smoke_settings("model.tokenizer.min_frequency=null", "pretrain.max_epochs=null")
    assert settings.model.tokenizer.min_frequency == 2
    assert settings.pretrain.max_epochs == 1
    with pytest.raises(ConfigError, match=r"^model\.tokenizer: .*needs a vocab_size"):
        smoke_settings("model.tokenizer.vocab_size=null")


def test_seeds_are_a_typed_section_of_distinct_integers() -> None:
    """`seeds.list` used to be checked by hand in the command, after composition; the schema
    now refuses a repeat, an empty list or a word before anything runs, naming the key."""
    assert smoke_settings("seeds.list=[7,3]").seeds.values == [7, 3]
    with pytest.raises(ConfigError, match=r"^seeds\.list: needs distinct seeds"):
        smoke_settings("seeds.list=[1,1]")
    with pytest.raises(ConfigError, match=r"^seeds\.list: List should have at least 1 item"):
        smoke_settings("seeds.list=[]")
    with pytest.raises(ConfigError, match=r"^seeds\.list\.0: Input should be a valid integer"):
        smoke_settings("seeds.list=[a]")
