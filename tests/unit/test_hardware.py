"""CPU facts parsing and the precision `auto` resolves to (facts injected, no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emergent.hardware import cpu_facts, resolve_precision


def facts(**flags: bool) -> dict:
    return {"cpu_model": "test", "avx512_bf16": False, "amx": False, **flags}


def test_auto_picks_bf16_only_where_the_cpu_has_native_bf16() -> None:
    assert resolve_precision("auto", facts(avx512_bf16=True)) == "bf16-mixed"
    assert resolve_precision("auto", facts(amx=True)) == "bf16-mixed"
    assert resolve_precision("auto", facts(avx2=True, avx512_vnni=True)) == "32-true"
    assert resolve_precision("32-true", facts(avx512_bf16=True)) == "32-true"


def test_cpu_facts_reads_model_and_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\n"
        "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile\n\nprocessor\t: 1\n"
    )
    got = cpu_facts(info)
    assert got["cpu_model"] == "Test CPU 9000"
    assert got["avx2"] and got["avx512_vnni"] and got["amx"]
    assert not got["avx512_bf16"]
    assert got["torch_cpu_capability"] and got["torch_threads"] >= 1


def test_build_trainer_uses_the_resolved_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from emergent import hardware, training

    trainer_cfg = OmegaConf.create(
        {"accelerator": "cpu", "devices": 1, "precision": "auto", "enable_progress_bar": False}
    )
    monkeypatch.setattr(hardware, "cpu_facts", lambda: facts(avx512_bf16=True))
    assert training.build_trainer(trainer_cfg, max_steps=1).precision == "bf16-mixed"
    monkeypatch.setattr(hardware, "cpu_facts", lambda: facts())
    assert training.build_trainer(trainer_cfg, max_steps=1).precision == "32-true"
