"""CPU facts (model, instruction-set flags, torch's kernel level) and what they imply.

Benchmarks record these so figures from different machines can be told apart, and training
uses them to pick a precision (`trainer.precision: auto`). One place reads /proc/cpuinfo.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
CPUINFO = Path("/proc/cpuinfo")


def cpu_facts(cpuinfo: Path = CPUINFO) -> dict[str, Any]:
    """CPU model, the flags that matter for int8/bf16 kernels, threads and torch's capability.

    Flags are read from /proc/cpuinfo (Linux); elsewhere they are reported as unknown (False).
    """
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    facts: dict[str, Any] = {"cpu_model": model}
    facts.update({flag: flag in flags for flag in FLAGS})
    facts["amx"] = facts["amx_bf16"] and facts["amx_tile"]
    facts["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    facts["torch_threads"] = torch.get_num_threads()
    return facts


def has_fast_bf16(facts: dict[str, Any]) -> bool:
    """bf16 matmuls run natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    return bool(facts.get("avx512_bf16") or facts.get("amx"))


def resolve_precision(requested: str, facts: dict[str, Any] | None = None) -> str:
    """`auto` -> `bf16-mixed` where the CPU computes bf16 natively, else `32-true`; any other
    value is returned unchanged (Lightning validates it)."""
    if str(requested) != "auto":
        return str(requested)
    facts = cpu_facts() if facts is None else facts
    resolved = "bf16-mixed" if has_fast_bf16(facts) else "32-true"
    log.info("trainer.precision=auto -> %s on %s", resolved, facts.get("cpu_model"))
    return resolved
