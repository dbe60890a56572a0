"""Numeric precision of the models' forward passes: fp32, or bf16 autocast on GPUs.

bf16 runs the network's convolutions and matrix products in bfloat16 (torch.autocast) while
the weights, the optimizer and the loss stay float32; the feature vector comes out of the
network in bfloat16 and every per-sample metric is then computed from it in float64 as
always (compute/geometry.py). On CUDA, bf16 also lays images and convolution weights out
channels-last, which tensor cores need to run at speed. fp32 is the default so that
snapshots stay comparable with each other and with the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on `device` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def channels_last(device: torch.device, precision: str) -> bool:
    """Whether forward passes lay tensors out channels-last: CUDA with bf16 only (on the CPU,
    and for fp32, the default layout is as fast or faster and leaves results bit for bit)."""
    return device.type == "cuda" and precision == "bf16"


@contextlib.contextmanager
def layout(model: nn.Module, device: torch.device, precision: str) -> Iterator[None]:
    """The model's parameters in the layout its forward passes use, and back afterwards, so
    that checkpoints and fingerprints never depend on it."""
    if not channels_last(device, precision):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def batch_layout(x: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """An image batch in the layout `layout` gives the model."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last(device, precision) else x
