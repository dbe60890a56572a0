"""The machine a benchmark or a cost estimate ran on, named as lscpu names it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model() -> str:
    """The processor's name and its logical CPUs, e.g. 'Intel(R) Xeon(R) Processor (2 logical CPUs)'."""
    lines = CPUINFO.read_text().splitlines() if CPUINFO.is_file() else []  # Linux; elsewhere the platform's word
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"
