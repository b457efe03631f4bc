"""What the benchmark prints: the report (lines as they come, the targets, the phases
during which the machine was shared) and the machine and software it ran on.

Takes the phases' figures; produces lines on stdout. Nothing here fails: what cannot be read
is printed as `?`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from measure import NOISE_SHARE, CpuSample


@dataclass
class Report:
    targets: list[tuple[str, bool, str]] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def target(self, name: str, ok: bool, measured: str) -> None:
        self.targets.append((name, ok, measured))

    def cpu(self, phase: str, sample: CpuSample, indent: str = "   ") -> None:
        """Say where the CPU went; remember a phase during which others took much of it."""
        self.say(indent + sample.describe())
        if sample.foreign_share() > NOISE_SHARE:
            self.noisy.append(f"{phase} ({sample.foreign_share():.0%})")



# -- the report around the run ---------------------------------------------------------------------

def _version(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return out.stdout.splitlines()[0] if out.stdout else "?"


def machine() -> Iterator[str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem = proc_meminfo_kib("MemTotal")
    yield (f"machine: {os.cpu_count()} CPUs ({model}), {mem / 1024 / 1024:.1f} GiB RAM,"
           f" {platform.system()} {platform.release()}")
    yield (f"software: Python {platform.python_version()}, {_version(['gpg', '--version'])},"
           f" python-gnupg {importlib.metadata.version('python-gnupg')},"
           f" aiosmtpd {importlib.metadata.version('aiosmtpd')}")


def proc_meminfo_kib(key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def filesystem(path: Path) -> str:
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind
