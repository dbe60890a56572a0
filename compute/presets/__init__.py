"""Named configurations: `prunescope compute --preset NAME`. Explicit flags override them."""

from __future__ import annotations

import dataclasses

from compute.config import ComputeConfig, ConfigError
from compute.presets import cifar10, cifar100, demo, tiny

PRESETS: dict[str, ComputeConfig] = {
    "demo": demo.PRESET,
    "tiny": tiny.PRESET,
    "cifar10": cifar10.PRESET,
    "cifar100": cifar100.PRESET,
}


def get_preset(name: str) -> ComputeConfig:
    if name not in PRESETS:
        raise ConfigError(f"--preset: {name!r} is not allowed; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name])
