"""What a node agent says about its machine: cores, memory, GPU, load (read when asked)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def host_facts() -> dict[str, Any]:
    """The machine now: usable cores, memory (MiB), load averages, GPUs (NVIDIA, when
    ``nvidia-smi`` answers), system."""
    return {
        "cores": len(os.sched_getaffinity(0)),
        "memory_mib": _meminfo(),
        "load": [round(v, 2) for v in os.getloadavg()],
        "gpus": nvidia_gpus(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
    }


def _meminfo() -> dict[str, int]:
    wanted = {"MemTotal": "total", "MemAvailable": "available"}
    found: dict[str, int] = {}
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        name, _, value = line.partition(":")
        if name in wanted:
            found[wanted[name]] = int(value.split()[0]) // 1024
    return found


def nvidia_gpus(timeout: float = 2.0) -> list[dict[str, Any]]:
    """Name and memory (MiB) of each NVIDIA GPU; none when there is no ``nvidia-smi``."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    query = "--query-gpu=name,memory.total,memory.used,utilization.gpu"
    try:
        out = subprocess.run(
            [tool, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=timeout, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [_gpu(line) for line in out.splitlines() if line.strip()]


def _gpu(line: str) -> dict[str, Any]:
    name, total, used, busy = (part.strip() for part in line.split(",")[:4])
    return {"name": name, "memory_mib": _int(total), "used_mib": _int(used), "busy": _int(busy)}


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None
