"""Models for `prunescope evaluate --models examples/my_models.py` (the README walks through it).

`models()` returns one dict per model. Here: a torchvision ResNet-18 adapted to 32x32
images, a copy pruned by torch.nn.utils.prune (global L1 magnitude, 80 %), and a small CNN
of another architecture. The weights are random (seeded) so that the example runs
anywhere; for your own, load a checkpoint into the module before returning it:

    net.load_state_dict(torch.load("dense.pt", map_location="cpu", weights_only=True))

Every model takes float images in [0, 1], shape (N, 3, H, W): put your normalisation
inside the module. Its last operation must be an nn.Linear (the class directions).
"""

import copy

import torch
import torchvision
from torch import nn
from torch.nn.utils import prune


def resnet18_32x32(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: a 3x3 stride-1 first conv, no max pooling."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, num_classes),
    )  # fmt: skip


def models() -> list[dict]:
    torch.manual_seed(0)
    dense = resnet18_32x32().eval()
    pruned = copy.deepcopy(dense)
    layers = [(m, "weight") for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.8)
    return [
        {"model_id": "resnet18-dense", "model": dense},  # no parent: a dense model
        {
            "model_id": "resnet18-l1-0.8",
            "model": pruned,
            "method": "torch_global_l1",
            "family": "unstructured",
            "target_sparsity": 0.8,
            "parent_id": "resnet18-dense",
        },
        {"model_id": "small-cnn", "model": small_cnn},  # a function that builds the model works too
    ]
