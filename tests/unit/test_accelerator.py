"""`trainer=gpu` and `accelerator`/`precision: auto`: what they resolve to with and without a
GPU (device facts injected), and the one-line error where a GPU is asked for and absent."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emergent.config import compose
from emergent.errors import ConfigError
from emergent.hardware import device_count, resolve_accelerator, resolve_precision
from tests.conftest import ROOT, git_env


def test_gpu_preset_composes_on_top_of_the_cpu_settings() -> None:
    trainer = compose(["trainer=gpu"], ROOT / "conf").trainer
    assert trainer.accelerator == "gpu"
    assert trainer.devices == "auto"
    assert trainer.precision == "auto"
    assert trainer.num_nodes == 1  # from trainer/cpu.yaml, for trainer.num_nodes=N
    assert compose(["trainer=gpu", "trainer.num_nodes=2"], ROOT / "conf").trainer.num_nodes == 2


def test_auto_accelerator_follows_the_cuda_devices_present() -> None:
    assert resolve_accelerator("auto", gpus=0) == "cpu"
    assert resolve_accelerator("auto", gpus=2) == "gpu"
    assert resolve_accelerator("gpu", devices=2, gpus=2) == "gpu"
    assert resolve_accelerator("cpu", gpus=2) == "cpu"


def test_asking_for_a_gpu_without_one_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_accelerator("gpu", gpus=0)
    assert str(err.value).startswith("trainer.accelerator: gpu requested but torch ")
    assert "no CUDA device" in str(err.value)
    with pytest.raises(ConfigError, match=r"^trainer\.devices: 4 GPUs requested, 2 present$"):
        resolve_accelerator("cuda", devices=4, gpus=2)


def test_precision_auto_on_gpus_uses_bf16_where_supported() -> None:
    assert resolve_precision("auto", {"gpu_name": "A100", "bf16": True}, "gpu") == "bf16-mixed"
    assert resolve_precision("auto", {"gpu_name": "T4", "bf16": False}, "gpu") == "16-mixed"
    # elsewhere the CPU rule: native bf16 or fp32
    cpu = {"cpu_model": "test", "avx512_bf16": False, "amx": False}
    assert resolve_precision("auto", cpu, "cpu") == "32-true"
    assert resolve_precision("auto", {**cpu, "amx": True}, "cpu") == "bf16-mixed"
    assert resolve_precision("16-mixed", {"bf16": True}, "gpu") == "16-mixed"


def test_device_count_reads_every_form_of_trainer_devices() -> None:
    assert device_count(2) == 2
    assert device_count([0, 3]) == 2
    assert device_count("0,1,2") == 3
    assert device_count("auto", "cpu") == 1


@pytest.mark.slow  # needs the session's pretrained smoke model
@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the machine without a GPU"
)
def test_trainer_gpu_without_a_gpu_fails_with_one_line(smoke_pretrained, tmp_path) -> None:
    """The whole command line: `finetune trainer=gpu` exits 1 with one `error:` line naming
    trainer.accelerator, and no traceback."""
    args = [sys.executable, "-m", "emergent", "finetune", "task=debate", "experiment=smoke"]
    args += ["trainer=gpu", f"paths.input_dir={smoke_pretrained}", f"hydra.run.dir={tmp_path}"]
    env = git_env()
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith("error: trainer.accelerator: gpu requested but torch ")
    assert "Traceback" not in proc.stderr
