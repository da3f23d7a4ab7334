"""What a person sees in a stage's output: one line per event, no vendor tips, no load tables."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers import tiny_bert_config

# As the entry points run: configure_logging() first, Lightning imported after (stages load
# lazily), then Lightning's own messages and warnings, and a real tiny fit through the stages'
# trainer (2 batches under log_every_n_steps=10, with a logger: what a smoke or tuning run is).
SCRIPT = textwrap.dedent(
    """
    import tempfile
    import warnings
    from emergent.cli import configure_logging
    configure_logging()
    import emergent.training
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_info
    from omegaconf import OmegaConf
    rank_zero_info("Restoring states from the checkpoint path at last.ckpt")
    rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
    warnings.warn_explicit(
        "`isinstance(treespec, LeafSpec)` is deprecated, use something else",
        FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree",
    )
    warnings.warn_explicit(
        "`isinstance(treespec, LeafSpec)` is deprecated, use something else",
        FutureWarning, "mine.py", 1, module="emergent.mine",
    )

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)), 2)
    trainer_cfg = OmegaConf.create(
        {
            "accelerator": "cpu",
            "devices": 1,
            "precision": "32-true",
            "log_every_n_steps": 10,
            "enable_progress_bar": True,  # as conf/trainer sets it; drawn only in a terminal
        }
    )
    with tempfile.TemporaryDirectory() as logs:
        trainer = emergent.training.build_trainer(
            trainer_cfg, max_epochs=1, val_check_interval=1.0, logger=CSVLogger(logs),
            enable_checkpointing=False,
        )
        trainer.fit(Tiny(), data)
    print("fit: steps", trainer.global_step)
    """
)


def test_lightning_messages_print_once_without_vendor_notes() -> None:
    """One line per Lightning message, and none of the ones nobody acts on: its tips, which
    devices exist, that a fit reached its max_epochs, a tiny run's log_every_n_steps warning
    (tune and seeds print one trainer's worth per trial or seed)."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 0, done.stderr
    assert "fit: steps 2" in done.stdout
    lines = (done.stdout + done.stderr).splitlines()
    restoring = [line for line in lines if "Restoring states" in line]
    assert len(restoring) == 1, lines  # was twice: "INFO: ..." and the timestamped line
    assert "lightning.pytorch.utilities.rank_zero: Restoring states" in restoring[0]
    for note in ("litlogger", "available:", "was configured so", "stopped:", "log_every_n_steps"):
        assert not [line for line in lines if note in line], (note, lines)
    # The filter is narrow: Lightning's deprecation goes, the same text from elsewhere stays.
    deprecations = [line for line in lines if "LeafSpec" in line]
    assert len(deprecations) == 1 and "mine.py" in deprecations[0], lines


def test_loading_into_another_head_logs_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    from transformers import BertForMaskedLM, BertForTokenClassification

    from emergent.models.backbone import from_pretrained_logged

    config = tiny_bert_config(
        vocab_size=30, hidden_size=8, intermediate_size=16, max_position_embeddings=16
    )
    BertForMaskedLM(config).save_pretrained(tmp_path)
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="emergent.models.backbone"):
        model = from_pretrained_logged(BertForTokenClassification, tmp_path, num_labels=3)
    assert model.classifier.out_features == 3
    ours = [r.getMessage() for r in caplog.records if r.name == "emergent.models.backbone"]
    assert ours == [
        f"BertForTokenClassification from {tmp_path}: 2 tensors newly initialised "
        "(classifier.*), 5 checkpoint tensors unused (cls.*)"
    ]
    printed = capfd.readouterr()
    assert "LOAD REPORT" not in printed.out + printed.err
    assert "UNEXPECTED" not in printed.out + printed.err


class _Terminal:
    """A stand-in stdout that says it is a terminal."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_bar_only_where_one_can_be_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    from omegaconf import OmegaConf

    from emergent.training import build_trainer

    trainer_cfg = OmegaConf.create(
        {"accelerator": "cpu", "devices": 1, "precision": "32-true", "enable_progress_bar": True}
    )
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert build_trainer(trainer_cfg, max_steps=1).progress_bar_callback is not None
    with open(os.devnull, "w") as piped:  # a file, as under `dvc repro > log` or CI
        monkeypatch.setattr(sys, "stdout", piped)
        assert build_trainer(trainer_cfg, max_steps=1).progress_bar_callback is None
    # a user who turned the bar off keeps it off in a terminal too
    monkeypatch.setattr(sys, "stdout", _Terminal())
    trainer_cfg.enable_progress_bar = False
    assert build_trainer(trainer_cfg, max_steps=1).progress_bar_callback is None


def test_piped_training_logs_progress_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a bar, a long fit still says where it is: a line with step of total, loss,
    s/step and time left, no more often than `trainer.progress_log_seconds`."""
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    from emergent.training import ProgressLog, build_trainer

    trainer_cfg = OmegaConf.create(
        {"accelerator": "cpu", "devices": 1, "precision": "32-true", "progress_log_seconds": 90}
    )
    with open(os.devnull, "w") as piped:
        monkeypatch.setattr(sys, "stdout", piped)
        added = [
            c
            for c in build_trainer(trainer_cfg, max_steps=1).callbacks
            if isinstance(c, ProgressLog)
        ]
    assert [c.every_seconds for c in added] == [90]

    now = [1000.0]
    callback = ProgressLog(60, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=100, callback_metrics={})
    callback.on_train_start(trainer, None)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="emergent.training"):
        for step in range(1, 11):  # 20 s a step: a line at steps 3, 6 and 9
            now[0] += 20.0
            trainer.global_step = step
            trainer.callback_metrics = {"train_loss": torch.tensor(1.0 / step)}
            callback.on_train_batch_end(trainer)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records if r.name == "emergent.training"]
    assert lines == [
        "step 3/100 (3%), train_loss 0.3333, 20.00 s/step, ~32.3 min left",
        "step 6/100 (6%), train_loss 0.1667, 20.00 s/step, ~31.3 min left",
        "step 9/100 (9%), train_loss 0.1111, 20.00 s/step, ~30.3 min left",
    ]
    caplog.clear()
    trainer.estimated_stepping_batches = float("inf")  # a data stream without a length
    now[0] += 60.0
    trainer.global_step = 11
    with caplog.at_level(logging.INFO, logger="emergent.training"):
        callback.on_train_batch_end(trainer)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == ["step 11, train_loss 0.1, 23.64 s/step"]
