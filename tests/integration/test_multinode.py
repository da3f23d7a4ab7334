"""docs/team.md's "Several machines" recipe on loopback: two `torchrun` processes, each a
"node" with one process, meet at a c10d rendezvous on 127.0.0.1 and fine-tune with `trainer=ddp
trainer.num_nodes=2` (gloo on the CPU). The validation headline the two-node run reports for
its best weights equals what one process computes on the same weights and validation data.

Tolerance: the metric is a ratio of counts (macro F1 over 105 smoke validation rows), so it
moves only when a prediction flips. Distributed validation sees each row once (Lightning pads
the last shard, our metric drops the duplicates) and computes the same fp32 logits up to
summation order, ~1e-6 relative; a flip needs a near-tie of two logits at that level. So the
two figures must agree to 1e-6; anything larger means rows were lost, doubled or mis-gathered.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, git_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASK = "debate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_nodes_on_loopback_validate_like_one_process(
    smoke_pretrained: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = git_env()
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        GLOO_SOCKET_IFNAME="lo",  # the "machines" talk over loopback
        OMP_NUM_THREADS="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    nodes = []
    for rank in (0, 1):
        args = [
            *torchrun,
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=emergent-test",
            "-m",
            "emergent",
            "finetune",
            f"task={TASK}",
            "experiment=smoke",
            "trainer=ddp",
            "trainer.devices=1",
            "trainer.num_nodes=2",
            "trainer.enable_progress_bar=false",
            f"paths.input_dir={smoke_pretrained}",
            f"hydra.run.dir={tmp_path / f'node{rank}'}",
        ]
        nodes.append(
            subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
        time.sleep(1.0)  # node 0 hosts the rendezvous store
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-4000:]

    # Node 0 (global rank 0) wrote the model; node 1 wrote none.
    model_dir = tmp_path / "node0" / "models" / TASK
    training = json.loads((model_dir / "training.json").read_text())
    assert training["world_size"] == 2 and training["num_nodes"] == 2
    assert not (tmp_path / "node1" / "models").exists()

    # One process, the same weights and validation data.
    out = tmp_path / "one.json"
    args = [str(smoke_pretrained), TASK, str(model_dir), "1", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/ddp_validate.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads(out.read_text())
    assert one["world_size"] == 1 and one["scored_rows"] == one["validation_rows"] > 2
    headline = f"val_{training['headline']}"
    assert training["best_val"] == pytest.approx(one[headline], abs=1e-6), (training, one)
    # Every count-based figure the two nodes logged at that check, not just the headline.
    (row,) = [r for r in training["history"]["validation"] if r["step"] == training["best_step"]]
    for key in ("val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro"):
        assert row[key] == pytest.approx(one[key], abs=1e-6), key
