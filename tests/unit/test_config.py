"""Configuration: params.yaml is exactly conf/ composed, and presets compose."""

from __future__ import annotations

from pathlib import Path

from emergent.config import Paths, compose, params_text
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
            optimizer = instantiate(fcfg.optimizer, params=[param], lr=0.1)
            assert isinstance(optimizer, torch.optim.Optimizer)
            for node in fcfg.callbacks.values():
                assert get_class(node._target_) is not None
            assert get_class(fcfg.datamodule._target_).__name__ == "TaskDataModule"
