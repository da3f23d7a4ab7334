"""Configuration: compose `conf/` with Hydra, load `params.yaml`, and resolve stage paths.

DVC stages read `params.yaml` (what DVC's Hydra composition writes); CLI runs compose `conf/`
with overrides. Both produce the same `DictConfig`, so stage code never knows which ran it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emergent.errors import ConfigError
from emergent.io import atomic_write_text
from emergent.schema import FinetuneShared, Settings, validate_config

CONFIG_NAME = "config"


def project_root() -> Path:
    """The project root: `EMERGENT_ROOT` if set, else the nearest parent holding `conf/`."""
    env = os.environ.get("EMERGENT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "conf" / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    return here


def compose(overrides: list[str] | None = None, config_dir: Path | None = None) -> DictConfig:
    """Compose `conf/` exactly as DVC's Hydra composition does (resolved, no `hydra` node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = (config_dir or project_root() / "conf").resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir), version_base=None):
        cfg = hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return cfg


def params_text(cfg: DictConfig) -> str:
    """The YAML text DVC writes for a composed config (`OmegaConf.to_yaml`)."""
    return OmegaConf.to_yaml(cfg)


def write_params(path: Path | None = None, overrides: list[str] | None = None) -> Path:
    """Rewrite `params.yaml` from `conf/` (what `make params` runs)."""
    root = project_root()
    path = path or root / "params.yaml"
    atomic_write_text(path, params_text(compose(overrides, root / "conf")))
    return path


def load_params(path: Path | None = None) -> DictConfig:
    """Load the composed config DVC stages run with."""
    path = path or project_root() / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `make params` to compose it from conf/")
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    return cfg


def plain_dict(node: Any, key: str, resolve: bool = False) -> dict[str, Any]:
    """A config mapping (`DictConfig`, or already plain) as a plain dict, for code that takes
    keyword arguments or JSON; `key` names it when it is not a mapping."""
    plain = OmegaConf.to_container(node, resolve=resolve) if OmegaConf.is_config(node) else node
    if not isinstance(plain, dict):
        raise ConfigError(key, f"must be a mapping, got {type(plain).__name__}")
    return {str(k): v for k, v in plain.items()}


def finetune_config(cfg: DictConfig, task: str) -> FinetuneShared:
    """The typed settings task `task` fine-tunes with (`Settings.finetune.task`: its own
    section over `finetune.shared`), for code that holds the composed config rather than the
    validated `Settings` (it validates the whole config: code holding `Settings` reads
    `settings.finetune.task(name)` instead)."""
    return validate_config(cfg).finetune.task(task)


def task_max_length(settings: Settings, task: str) -> int:
    """Sequence length a task model is trained, evaluated and exported with."""
    return min(settings.finetune.task(task).max_length, settings.model.max_length)


@dataclass(frozen=True)
class Paths:
    """Where a stage reads inputs from and writes outputs to.

    Under DVC both are the project root, so outputs land where `dvc.yaml` declares them.
    A CLI run (`python -m emergent <stage>`) writes into its Hydra run folder instead and reads
    upstream artifacts from the project root (or `paths.input_dir`).
    """

    input_dir: Path
    output_dir: Path

    def inp(self, *parts: str) -> Path:
        """An input: from the output folder if an earlier run into it made one, else from
        `input_dir` (so CLI runs sharing `hydra.run.dir` chain like the DVC pipeline)."""
        own = self.output_dir.joinpath(*parts)
        return own if own.exists() else self.input_dir.joinpath(*parts)

    def out(self, *parts: str) -> Path:
        return self.output_dir.joinpath(*parts)

    @property
    def is_dvc(self) -> bool:
        return self.input_dir.resolve() == self.output_dir.resolve()

    @classmethod
    def for_dvc(cls, root: Path | None = None) -> Paths:
        root = (root or project_root()).resolve()
        return cls(root, root)

    @classmethod
    def for_cli(cls, cfg: DictConfig, output_dir: Path) -> Paths:
        configured = cfg.paths.input_dir
        return cls(Path(configured).resolve() if configured else project_root(), output_dir)


def main() -> None:
    """`python -m emergent.config`: rewrite params.yaml from conf/ (`make params`)."""
    print(f"wrote {write_params()}")


if __name__ == "__main__":
    main()
