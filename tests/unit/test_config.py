"""Configuration: params.yaml is exactly conf/ composed, and presets compose."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emergent.config import Paths, compose, finetune_config, params_text, plain_dict
from emergent.errors import ConfigError
from emergent.schema import FinetuneShared, validate_config
from tests.conftest import ROOT


def test_params_yaml_is_the_composition_of_conf() -> None:
    expected = params_text(compose([], ROOT / "conf"))
    actual = (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert actual == expected, "params.yaml is stale: run `make params`"


def test_smoke_experiment_swaps_the_model_group() -> None:
    cfg = compose(["experiment=smoke"], ROOT / "conf")
    assert cfg.model.name == "tiny_bert" and cfg.model.config.hidden_size == 32
    assert cfg.data.ner.max_rows == 300
    assert compose([], ROOT / "conf").model.name == "minilm"


def test_group_and_key_overrides() -> None:
    cfg = compose(["model=tiny_bert", "data.sentiment.max_rows=500"], ROOT / "conf")
    assert cfg.model.tokenizer.train is True and cfg.data.sentiment.max_rows == 500


def test_paths_for_dvc_and_cli(tmp_path: Path) -> None:
    dvc = Paths.for_dvc(tmp_path)
    assert dvc.is_dvc and dvc.out("a") == tmp_path / "a"
    cfg = compose([f"paths.input_dir={tmp_path}"], ROOT / "conf")
    cli = Paths.for_cli(cfg, tmp_path / "run")
    assert not cli.is_dvc and cli.inp("x") == tmp_path / "x"


def group_options() -> list[tuple[str, str]]:
    """Every option of every config group under conf/ (tasks are placed by package)."""
    return [
        (group.name, option.stem)
        for group in sorted((ROOT / "conf").iterdir())
        if group.is_dir() and group.name != "tasks"
        for option in sorted(group.glob("*.yaml"))
    ]


def test_every_config_group_option_composes_and_instantiates() -> None:
    """Each option composes; the task definitions and the fine-tuning `_target_` nodes
    (optimizer, callbacks, datamodule) build."""
    import torch
    from hydra.utils import get_class, instantiate

    from emergent.config import finetune_config
    from emergent.tasks import all_tasks

    options = group_options()
    assert ("experiment", "smoke") in options and ("model", "minilm") in options
    for group, option in options:
        cfg = compose([f"{group}={option}"], ROOT / "conf")
        tasks = all_tasks(cfg)
        assert [t.name for t in tasks] == list(cfg.tasks)
        for task in tasks:
            fcfg = finetune_config(cfg, task.name)
            param = torch.nn.Parameter(torch.zeros(1))
            # the typed targets dump back to what hydra instantiates
            optimizer = instantiate(
                fcfg.optimizer.model_dump(by_alias=True), params=[param], lr=0.1
            )
            assert isinstance(optimizer, torch.optim.Optimizer)
            for node in (fcfg.callbacks.early_stopping, fcfg.callbacks.best_weights):
                assert get_class(node.target) is not None
            assert get_class(fcfg.datamodule.target).__name__ == "TaskDataModule"


# --- per-task fine-tuning sections: every shared key, without `+` ---------------------------


def leaves(node: object, prefix: str = "") -> dict[str, object]:
    """Dotted leaf keys of a plain config tree with their values."""
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    out: dict[str, object] = {}
    for key, value in node.items():
        out.update(leaves(value, f"{prefix}{key}."))
    return out


def test_every_task_section_declares_every_shared_key_as_inherit() -> None:
    """conf/finetune/task/inherit.yaml has the shape of finetune.shared, each key interpolating
    its shared key, and each task's section starts from it (so `finetune.<task>.<key>=v` needs
    no `+`, and params.yaml holds no null "inherit" markers)."""
    cfg = compose([], ROOT / "conf")
    shared = leaves(OmegaConf.to_container(cfg.finetune.shared))
    inherit = leaves(
        OmegaConf.to_container(OmegaConf.load(ROOT / "conf/finetune/task/inherit.yaml"))
    )
    assert set(inherit) == set(shared), "conf/finetune/task/inherit.yaml differs from shared"
    assert inherit == {key: f"${{finetune.shared.{key}}}" for key in shared}
    assert set(cfg.finetune) == {"shared", *cfg.tasks}
    for task in cfg.tasks:
        own = leaves(OmegaConf.to_container(cfg.finetune[task]))
        assert set(own) == set(shared), task
        # a null in a task's section is a null of finetune.shared, never an "inherit" copy
        assert {k for k, v in own.items() if v is None} <= {
            k for k, v in shared.items() if v is None
        }, task


def _own_keys(*files: str) -> dict[str, dict]:
    """The keys each task section sets in these conf files (what differs from `shared`)."""
    out: dict[str, dict] = {}
    for rel in files:
        data = OmegaConf.to_container(OmegaConf.load(ROOT / rel))
        # conf/finetune/*.yaml is placed at `finetune`; an experiment preset is global
        finetune = data if rel.startswith("conf/finetune/") else data.get("finetune", {})
        for task, keys in finetune.items():
            if task not in ("defaults", "shared"):
                out[task] = OmegaConf.to_container(OmegaConf.merge(out.get(task, {}), keys))
    return out


@pytest.mark.parametrize(
    ("overrides", "files"),
    [
        ([], ["conf/finetune/default.yaml"]),
        (["experiment=smoke"], ["conf/finetune/default.yaml", "conf/experiment/smoke.yaml"]),
    ],
)
def test_each_task_trains_with_shared_and_only_its_own_keys_over_it(
    overrides: list[str], files: list[str]
) -> None:
    """What a task fine-tunes with is `finetune.shared` with exactly the keys its section sets
    in conf/ merged over it, under the default config and `experiment=smoke` (how the settings
    were defined before task sections were filled from `shared`)."""
    cfg = compose(overrides, ROOT / "conf")
    own = _own_keys(*files)
    assert set(own) == set(cfg.tasks)
    for task in cfg.tasks:
        expected = OmegaConf.merge(cfg.finetune.shared, own[task])
        typed = FinetuneShared.model_validate(OmegaConf.to_container(expected, resolve=True))
        assert finetune_config(cfg, task) == typed, task


def test_a_shared_key_reaches_every_task_that_does_not_set_it() -> None:
    """`finetune.shared.<key>=v` (`dvc exp run -S ...`) moves every task except one that sets
    the key itself; a key added to `shared` alone (a Hydra target's argument) reaches all."""
    cfg = compose(
        ["finetune.shared.batch_size=4", "+finetune.shared.optimizer.amsgrad=true"],
        ROOT / "conf",
    )
    ner, sent, debate = (finetune_config(cfg, t) for t in ("ner", "sentiment", "debate"))
    assert (ner.batch_size, sent.batch_size, debate.batch_size) == (4, 32, 4)
    assert all(t.optimizer.amsgrad is True for t in (ner, sent, debate))


def test_any_shared_key_overrides_per_task_without_plus() -> None:
    """Each shared key set on `finetune.debate` from the command line (what `dvc exp run -S`
    passes to Hydra): all compose, and the debate run then trains with the shared values (its
    own max_epochs=4 and head_lr=1e-3 are set back; null is a value), the other tasks
    unchanged."""
    import json

    cfg = compose([], ROOT / "conf")
    shared = leaves(OmegaConf.to_container(cfg.finetune.shared))
    overrides = [f"finetune.debate.{key}={json.dumps(value)}" for key, value in shared.items()]
    assert len(overrides) > 30
    changed = compose(overrides, ROOT / "conf")
    assert finetune_config(changed, "debate") == validate_config(changed).finetune.shared
    assert finetune_config(cfg, "debate").max_epochs == 4
    assert finetune_config(changed, "ner") == finetune_config(cfg, "ner")


def test_readme_per_task_override_changes_that_task_only() -> None:
    cfg = compose(
        ["finetune.ner.lr=3e-5", "finetune.sentiment.datamodule.group_by_length=false"],
        ROOT / "conf",
    )
    assert finetune_config(cfg, "ner").lr == 3e-5
    assert finetune_config(cfg, "sentiment").datamodule.group_by_length is False
    assert finetune_config(cfg, "sentiment").datamodule.shuffle_batches is True
    assert finetune_config(cfg, "debate").lr == 1e-4  # shared


def test_schema_knows_every_lightning_trainer_argument() -> None:
    import lightning

    from emergent.schema import TRAINER_ARGUMENTS

    names = list(inspect.signature(lightning.Trainer.__init__).parameters)[1:]
    assert names == TRAINER_ARGUMENTS


@pytest.mark.parametrize(
    "option",
    ["default", "smoke", "scratch", "fewshot_full", "ner_tuned", "sentiment_tuned", "ddp"],
)
def test_every_preset_validates(option: str) -> None:
    from emergent.schema import validate_config

    group = "trainer" if option == "ddp" else "experiment"
    override = [] if option == "default" else [f"{group}={option}"]
    validated = validate_config(compose(override, ROOT / "conf"))
    assert validated.seed == 42


def test_plain_dict_gives_a_config_mapping_as_a_dict_and_names_a_key_that_is_not_one() -> None:
    cfg = OmegaConf.create({"lr": "${base}", "base": 0.5, "opt": {"_target_": "x.Y", "eps": 1}})
    assert plain_dict(cfg.opt, "opt") == {"_target_": "x.Y", "eps": 1}
    assert plain_dict(cfg, "root", resolve=True)["lr"] == 0.5
    assert plain_dict(cfg, "root")["lr"] == "${base}"  # unresolved unless asked
    assert plain_dict({"a": 1}, "a") == {"a": 1}  # already plain
    with pytest.raises(ConfigError, match=r"^model\.config: must be a mapping, got list"):
        plain_dict(OmegaConf.create([1, 2]), "model.config")
