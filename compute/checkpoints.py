"""Model checkpoints of a snapshot: `--checkpoints` saves them, `load_model` reads them back.

A checkpoint is a plain state dict (weights, batch-norm statistics and `weight_mask`
buffers) read with `torch.load(..., weights_only=True)`, so loading one never runs code
from the file. Pruned models of unstructured methods load into an unpruned model of the
architecture as they are; structurally pruned models have fewer channels, and the loader
sizes the layers after the checkpoint's tensors before loading.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from compute import models, schema
from compute.snapshot import SnapshotError, read_manifest


def checkpoint_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _resized(module: nn.Module, state: dict[str, torch.Tensor], prefix: str) -> nn.Module:
    """A module of the same kind with the shapes of its checkpoint tensors."""
    weight = state[f"{prefix}weight"]
    if isinstance(module, nn.Conv2d):
        new = nn.Conv2d(
            weight.shape[1] * module.groups, weight.shape[0], module.kernel_size, module.stride, module.padding,
            module.dilation, module.groups, module.bias is not None, module.padding_mode,
        )  # fmt: skip
    elif isinstance(module, nn.Linear):
        new = nn.Linear(weight.shape[1], weight.shape[0], module.bias is not None)
    elif isinstance(module, nn.BatchNorm2d):
        new = nn.BatchNorm2d(weight.shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    else:
        raise ValueError(f"cannot resize {type(module).__name__} at {prefix!r}")
    return models.add_mask_buffers(new) if isinstance(new, (nn.Conv2d, nn.Linear)) else new


def fit_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize every layer whose weight differs in shape from the checkpoint (structured pruning)."""
    for name, module in list(model.named_modules()):
        key = f"{name}.weight"
        if key in state and hasattr(module, "weight") and module.weight is not None:
            if tuple(module.weight.shape) != tuple(state[key].shape):
                parent_name, _, child = name.rpartition(".")
                setattr(
                    model.get_submodule(parent_name) if parent_name else model,
                    child,
                    _resized(module, state, f"{name}."),
                )
    return model


def load_model(snapshot: str | Path, model_id: str, device: str | torch.device = "cpu") -> models.Classifier:
    """The model `model_id` of a snapshot written with `--checkpoints`, ready to evaluate."""
    snapshot = Path(snapshot)
    manifest = read_manifest(snapshot)
    path = snapshot / schema.CHECKPOINTS_DIR / f"{schema.check_model_id(model_id)}.pt"
    if not path.is_file():
        raise SnapshotError(
            f"{path} not found; rebuild the snapshot with `prunescope compute ... --checkpoints` to keep model weights"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    spec = models.ModelSpec(
        manifest["architecture"],
        len(manifest["dataset"]["classes"]),
        tuple(state["normalize.mean"].flatten().tolist()),
        tuple(state["normalize.std"].flatten().tolist()),
        tuple(manifest["dataset"].get("image_shape", [3, 32, 32])[1:]),
    )
    model = fit_to_state(models.build(spec), state)
    model.load_state_dict(state)
    return model.to(device).eval()
