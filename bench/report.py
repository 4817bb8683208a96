"""The machine a benchmark ran on, and writing a section of ``docs/performance.md``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from gateway.loop import loop_name

_PACKAGES = ("litestar", "uvicorn", "uvloop", "httptools", "aiohttp", "msgspec", "structlog")


@dataclass(frozen=True, slots=True)
class Machine:
    cpus: int
    cpu_model: str
    ram_gib: float
    python: str
    system: str
    load: tuple[float, float, float]
    packages: str

    def describe(self) -> str:
        load = ", ".join(f"{v:.2f}" for v in self.load)
        return (
            f"{self.cpus} CPUs ({self.cpu_model}), {self.ram_gib:.1f} GiB RAM, {self.system}, "
            f"Python {self.python}; {self.packages}; load average at the start {load}"
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _packages() -> str:
    found = [f"{n} {v}" for n in _PACKAGES if (v := _version(n))]
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = loop_name()
    return ", ".join(found) + f" (uvicorn http: {http}, loop: {loop})"


def machine() -> Machine:
    """What this machine is, as far as a benchmark's reader needs to know."""
    return Machine(
        cpus=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        ram_gib=_ram_gib(),
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
        load=os.getloadavg(),
        packages=_packages(),
    )


def write_section(path: Path, body: str) -> None:
    """Create or replace the ``## `` section that ``body`` starts with; keep the rest."""
    title = body.splitlines()[0]
    lines = path.read_text().splitlines() if path.exists() else ["# Performance", ""]
    if title in lines:
        start = lines.index(title)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = [*body.rstrip("\n").splitlines(), ""]
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *body.rstrip("\n").splitlines(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def ms(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def publish(markdown: str, out: str) -> str:
    """Write ``markdown`` as a section of ``out`` (unless ``out`` is ``-``); return it."""
    if out != "-":
        write_section(Path(out), markdown)
        markdown += f"\n(written to {out})\n"
    return markdown
