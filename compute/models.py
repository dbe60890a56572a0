"""Architectures: a registry of classifiers built as `features -> nn.Linear`.

Every model
- takes images in [0, 1] and normalises them itself, so corruptions act on raw pixels;
- exposes `features(x)` (the penultimate vector f) and `classifier` (the last nn.Linear),
  the geometry contract of docs/DESIGN.md: logits = classifier(features(x));
- carries a `weight_mask` buffer beside the weight of every Conv2d and Linear layer
  (all ones when dense), so a pruned checkpoint loads into an unpruned model of the
  same architecture with a plain `load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from compute.config import InputError


class Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that can be removed together (structured pruning).

    `producer` is the conv whose filters go, `norm` the batch norm on its outputs, and
    `consumers` the layers that read those channels as inputs (conv in-channels, or a
    linear layer's in-features after global average pooling).
    """

    producer: str
    norm: str | None
    consumers: tuple[str, ...]


class Classifier(nn.Module):
    """Base class: subclasses define `self.normalize`, `self.body` and `self.classifier`."""

    normalize: Normalize
    body: nn.Module
    classifier: nn.Linear

    def channel_groups(self) -> list[ChannelGroup]:
        """Filter groups whose removal leaves the architecture valid (default: none)."""
        return []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.classifier(f)


def conv_bn(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(Classifier):
    """Three strided 3x3 conv blocks, global average pooling, one linear layer.

    Sized for the 32x32 digits demo on a laptop CPU (about 0.7 M multiply-adds per image
    at the default widths).
    """

    def __init__(self, num_classes: int, mean, std, widths=(16, 32, 64)):
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        c_in = 3
        for width in widths:
            layers += conv_bn(c_in, width, stride=2)
            c_in = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def channel_groups(self) -> list[ChannelGroup]:
        convs = [i for i, m in enumerate(self.body) if isinstance(m, nn.Conv2d)]
        readers = [f"body.{i}" for i in convs[1:]] + ["classifier"]
        return [ChannelGroup(f"body.{i}", f"body.{i + 1}", (reader,)) for i, reader in zip(convs, readers, strict=True)]


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(Classifier):
    """ResNet-(6n+2) for 32x32 images (He et al. 2016), 1x1-conv projection shortcuts."""

    def __init__(self, num_classes: int, mean, std, depth: int = 20, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = conv_bn(3, width, stride=1)
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for block in range(n):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    def channel_groups(self) -> list[ChannelGroup]:
        # a block's output channels are tied to its shortcut by the residual addition, so
        # only the inner channels (conv1 -> bn1 -> conv2) are free, as in Li et al. 2017
        return [
            ChannelGroup(f"body.{i}.conv1", f"body.{i}.bn1", (f"body.{i}.conv2",))
            for i, m in enumerate(self.body)
            if isinstance(m, BasicBlock)
        ]


class ResNet18(Classifier):
    """ResNet-18 with the CIFAR stem (a 3x3 stride-1 conv, no max pooling): four stages of
    two basic blocks, 64-512 channels, global average pooling, one linear layer."""

    def __init__(self, num_classes: int, mean, std, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = conv_bn(3, widths[0], stride=1)
        c_in = widths[0]
        for stage, (c_out, count) in enumerate(zip(widths, blocks, strict=True)):
            for block in range(count):
                layers.append(BasicBlock(c_in, c_out, 2 if stage > 0 and block == 0 else 1))
                c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, num_classes)

    channel_groups = CifarResNet.channel_groups


def conv_stack(plan: list, batch_norm: bool) -> tuple[list[nn.Module], int]:
    """3x3 convolutions (padding 1) with ReLU, 'M' a 2x2 max pooling; the layers and the
    number of output channels."""
    layers: list[nn.Module] = []
    c_in = 3
    for item in plan:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        elif batch_norm:
            layers += conv_bn(c_in, item, stride=1)
            c_in = item
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = item
    return layers, c_in


def conv_groups(body: nn.Sequential) -> list[ChannelGroup]:
    """Each conv's filters with its batch norm and the next conv that reads them. The last
    conv is left out: what reads it is not a conv (pooling into the classifier, or a
    flattened spatial map)."""
    convs = [i for i, m in enumerate(body) if isinstance(m, nn.Conv2d)]
    groups = []
    for i, reader in zip(convs, convs[1:], strict=False):
        norm = f"body.{i + 1}" if isinstance(body[i + 1], nn.BatchNorm2d) else None
        groups.append(ChannelGroup(f"body.{i}", norm, (f"body.{reader}",)))
    return groups


class VGG(Classifier):
    """VGG with batch norm for CIFAR (open_lth's cifar_vgg): 3x3 conv stages with max
    pooling between, global average pooling, one linear layer."""

    PLANS = {
        16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    }

    def __init__(self, num_classes: int, mean, std, depth: int = 16):
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers, c_out = conv_stack(self.PLANS[depth], batch_norm=True)
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_out, num_classes)

    def channel_groups(self) -> list[ChannelGroup]:
        return conv_groups(self.body)


class ConvN(Classifier):
    """Conv-2/4/6/8 of Frankle & Carbin 2019 (Conv-8 as in Ramanujan et al. 2020): pairs of
    3x3 convs with ReLU and 2x2 max pooling, then fully connected layers of 256 and 256 with
    ReLU; the classifier reads the second of them. No batch norm."""

    PLANS = {
        2: [64, 64, "M"],
        4: [64, 64, "M", 128, 128, "M"],
        6: [64, 64, "M", 128, 128, "M", 256, 256, "M"],
        8: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"],
    }

    def __init__(self, num_classes: int, mean, std, depth: int, image_size: tuple[int, int] = (32, 32)):
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers, c_out = conv_stack(self.PLANS[depth], batch_norm=False)
        shrink = 2 ** (depth // 2)
        if image_size[0] % shrink or image_size[1] % shrink:
            raise ValueError(f"conv{depth} halves the image {depth // 2} times; its sides must divide by {shrink}")
        flat = c_out * (image_size[0] // shrink) * (image_size[1] // shrink)
        fully_connected = [nn.Linear(flat, 256), nn.ReLU(inplace=True), nn.Linear(256, 256), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers, nn.Flatten(), *fully_connected)
        self.classifier = nn.Linear(256, num_classes)

    def channel_groups(self) -> list[ChannelGroup]:
        return conv_groups(self.body)


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int] = (32, 32)  # (height, width) of the input images


Builder = Callable[[ModelSpec], Classifier]
ARCHITECTURES: dict[str, Builder] = {
    "small_cnn": lambda s: SmallCNN(s.num_classes, s.mean, s.std),
    "resnet20": lambda s: CifarResNet(s.num_classes, s.mean, s.std, depth=20),
    "resnet32": lambda s: CifarResNet(s.num_classes, s.mean, s.std, depth=32),
    "resnet18": lambda s: ResNet18(s.num_classes, s.mean, s.std),
    "vgg16_bn": lambda s: VGG(s.num_classes, s.mean, s.std, depth=16),
    **{f"conv{n}": (lambda s, n=n: ConvN(s.num_classes, s.mean, s.std, n, s.image_size)) for n in (2, 4, 6, 8)},
}


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv2d and Linear layer, in definition order: the layers that carry masks."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def add_mask_buffers(model: nn.Module) -> nn.Module:
    for _, module in prunable_modules(model):
        if not hasattr(module, "weight_mask"):
            module.register_buffer("weight_mask", torch.ones_like(module.weight, dtype=torch.bool))
    return model


def spec_for(architecture: str, dataset) -> ModelSpec:
    """The architecture's spec for a data set: its classes, channel statistics and image size."""
    mean, std = dataset.channel_stats()
    return ModelSpec(architecture, dataset.num_classes, tuple(mean), tuple(std), tuple(dataset.image_shape[1:]))


def check_fits(spec: ModelSpec) -> None:
    """InputError (one line) when the architecture cannot take images of the spec's size: its pooling
    would shrink them below one pixel. One forward of a blank image on the CPU, before any work."""
    height, width = spec.image_size
    try:
        model = build(spec).eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
    except (RuntimeError, ValueError) as err:  # a builder's own size rule, or a pooling with nothing left
        reason = str(err).strip().splitlines()[0][:120]
        raise InputError(
            f"--architecture {spec.architecture} cannot take {height}x{width} images ({reason}); choose an "
            "architecture that pools less, such as small_cnn, or larger images"
        ) from None


def build(spec: ModelSpec) -> Classifier:
    if spec.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {spec.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    return add_mask_buffers(ARCHITECTURES[spec.architecture](spec))
