"""CPU and GPU facts (model, instruction-set flags, torch's kernel level) and what they imply.

Benchmarks record these so figures from different machines can be told apart, and training
uses them to pick an accelerator (`trainer.accelerator: auto`) and a precision
(`trainer.precision: auto`). One place reads /proc/cpuinfo and asks torch about CUDA.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

from emergent.errors import ConfigError

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


GPU_ACCELERATORS = {"gpu", "cuda"}


def cuda_devices() -> int:
    """How many CUDA devices torch sees (0 on CPU-only builds and machines)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_facts(index: int = 0) -> dict[str, Any]:
    """Name, compute capability and bf16 support of one CUDA device."""
    import torch

    major, minor = torch.cuda.get_device_capability(index)
    return {
        "gpu_name": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
        "bf16": bool(torch.cuda.is_bf16_supported()),
        "cuda_version": torch.version.cuda,
    }


def device_count(devices: Any, accelerator: str = "cpu") -> int:
    """Processes per node that `trainer.devices` asks for: an int, a list of GPU indices, a
    comma-separated string, or `auto`/-1 (every visible GPU; one process on the CPU)."""
    if isinstance(devices, list | tuple):
        return max(1, len(devices))
    text = str(devices if devices is not None else 1).strip()
    if text in {"auto", "-1"}:
        return max(1, cuda_devices()) if resolve_accelerator(accelerator) != "cpu" else 1
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    return max(1, int(text))


def resolve_accelerator(requested: str, devices: Any = None, gpus: int | None = None) -> str:
    """`auto` -> `gpu` where CUDA is present, else `cpu`; `gpu`/`cuda` on a machine without a
    CUDA device (or with fewer than `trainer.devices`) is a ConfigError naming the key, before
    Lightning fails with its own traceback. Anything else is returned unchanged."""
    requested = str(requested)
    gpus = cuda_devices() if gpus is None else gpus
    if requested == "auto":
        return "gpu" if gpus else "cpu"
    if requested in GPU_ACCELERATORS:
        import torch

        if not gpus:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                "trainer.accelerator",
                f"{requested} requested but torch {torch.__version__} ({build}) sees no CUDA "
                "device; use trainer=cpu or trainer.accelerator=auto",
            )
        if isinstance(devices, int) and devices > gpus:
            raise ConfigError("trainer.devices", f"{devices} GPUs requested, {gpus} present")
    return requested


def resolve_precision(
    requested: str, facts: dict[str, Any] | None = None, accelerator: str = "cpu"
) -> str:
    """`auto` on a GPU (`accelerator` resolved: `gpu`/`cuda`) -> `bf16-mixed` where the GPU
    supports bf16 (Ampere and later), else `16-mixed` (fp16 with Lightning's loss scaling); on
    the CPU -> `bf16-mixed` where it computes bf16 natively, else `32-true`. Any other value is
    returned unchanged (Lightning validates it)."""
    if str(requested) != "auto":
        return str(requested)
    if accelerator in GPU_ACCELERATORS:
        gpu = gpu_facts() if facts is None else facts
        resolved = "bf16-mixed" if gpu.get("bf16") else "16-mixed"
        log.info("trainer.precision=auto -> %s on %s", resolved, gpu.get("gpu_name"))
        return resolved
    facts = cpu_facts() if facts is None else facts
    resolved = "bf16-mixed" if has_fast_bf16(facts) else "32-true"
    log.info("trainer.precision=auto -> %s on %s", resolved, facts.get("cpu_model"))
    return resolved


def device_facts(device: str = "cpu") -> dict[str, Any]:
    """The device a benchmark ran on, by name (`cpu` or `cuda[:i]`), for its report."""
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return {"device": device, "device_name": gpu_facts(index)["gpu_name"]}
    return {"device": "cpu", "device_name": cpu_facts()["cpu_model"]}
