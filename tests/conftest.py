"""Shared fixtures: small CPU configs (`experiment=smoke`) and temporary project copies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from emergent.config import Paths, compose, params_text
from emergent.schema import Settings, validate_config
from emergent.stages import run_stage

ROOT = Path(__file__).resolve().parents[1]

# Tests never reach a hub nor write to the developer's mlflow.db.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_FILES = [
    "conf",
    "data/feedback",
    "src",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "requirements-data.txt",
]


def smoke_cfg(*overrides: str, tmp: Path | None = None) -> DictConfig:
    """The smoke experiment, with MLflow pointed at a temporary sqlite file when `tmp` is given."""
    cfg = compose(["experiment=smoke", *overrides], ROOT / "conf")
    if tmp is not None:
        cfg.mlflow.tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
        cfg.mlflow.artifact_dir = str(tmp / "mlartifacts")
    return cfg


def smoke_settings(*overrides: str) -> Settings:
    """The smoke experiment validated: the typed config stages and the data layer read."""
    return validate_config(smoke_cfg(*overrides))


@pytest.fixture
def cfg(tmp_path: Path) -> DictConfig:
    return smoke_cfg(tmp=tmp_path)


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="session")
def prepared_smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smoke-sized prepared data, built once per session (read-only for tests)."""
    from emergent.data.prepare import prepare_all
    from emergent.tasks import all_tasks

    out = tmp_path_factory.mktemp("prepared") / "prepared"
    cfg = smoke_cfg()
    settings = validate_config(cfg)
    prepare_all(settings.data, all_tasks(cfg), settings.seed, out, base_dir=ROOT)
    return out


def smoke_project(root: Path, *overrides: str) -> Path:
    """A project folder with smoke params.yaml, prepared data and a trained tokenizer."""
    (root / "conf").mkdir(parents=True, exist_ok=True)
    cfg = smoke_cfg(*overrides)
    (root / "params.yaml").write_text(params_text(cfg), encoding="utf-8")
    paths = Paths.for_dvc(root)
    for stage in ("ingest", "tokenizer"):
        run_stage(stage, cfg, Paths(ROOT, root) if stage == "ingest" else paths)
    return root


@pytest.fixture(scope="session")
def smoke_pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke project with prepared data, tokenizer and a pretrained model (built once)."""
    base = tmp_path_factory.mktemp("smoke")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
        root = smoke_project(base / "p")
        run_stage("pretrain", smoke_cfg(), Paths.for_dvc(root))
    return root


#: the tasks the session's `exported` fixture fine-tunes and exports
EXPORTED_TASKS = ("ner", "sentiment")

#: fixtures that make a test heavy: a trained model (pretraining, fine-tuning, export: minutes
#: on two cores), a DVC lock over a project copy, a PostgreSQL cluster. A test that asks for
#: one is slow by definition (the budget is stated with the markers in pyproject.toml);
#: `pytest_collection_modifyitems` refuses it unmarked. (`project_copy` alone is cheap: what
#: a test runs in the copy decides.)
HEAVY_FIXTURES = frozenset({"smoke_pretrained", "exported", "locked_project", "postgres"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test that needs a heavy fixture unless it is marked slow (one line per test).

    `tryfirst`: this runs before `-m` deselects, so the check holds whatever is selected."""
    unmarked = [
        f"{item.nodeid} (uses {', '.join(sorted(HEAVY_FIXTURES & set(item.fixturenames)))})"
        for item in items
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests need a heavy fixture and must be marked @pytest.mark.slow:\n  "
            + "\n  ".join(unmarked)
        )


@pytest.fixture(scope="session")
def exported(smoke_pretrained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both tasks fine-tuned and exported, registered in a module-local MLflow db."""
    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        paths = Paths.for_dvc(smoke_pretrained)
        for task in EXPORTED_TASKS:
            run_stage("finetune", smoke_cfg(), paths, task=task)
            run_stage("export", smoke_cfg(), paths, task=task)
    return db


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GIT_AUTHOR_NAME="emergent tests",
        GIT_AUTHOR_EMAIL="tests@emergent.invalid",
        GIT_COMMITTER_NAME="emergent tests",
        GIT_COMMITTER_EMAIL="tests@emergent.invalid",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A committed copy of the project in a temporary git repository (for DVC and the CLI)."""
    return copy_project(tmp_path / "project")


def copy_project(dest: Path) -> Path:
    """Copy the project's files to `dest` and commit them in a new git repository there."""
    dest.mkdir()
    for rel in PROJECT_FILES:
        src = ROOT / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, target)
    env = git_env()
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "test copy"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True)
    return dest


def run_cmd(
    args: list[str], cwd: Path, timeout: int = 600, root: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a command with the test venv first on PATH (and `EMERGENT_ROOT=root` if given)."""
    env = git_env()
    if root is not None:
        env["EMERGENT_ROOT"] = str(root)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
