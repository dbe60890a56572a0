"""CIFAR-100 at full scale on a CUDA GPU: ResNet-18 (CIFAR stem), every method, every condition.

As the cifar10 preset, with a network whose 512-wide feature vector leaves room for 100
class directions (ResNet-20's has 64).
"""

import dataclasses

from compute.presets.cifar10 import PRESET as CIFAR10

PRESET = dataclasses.replace(CIFAR10, dataset="cifar100", architecture="resnet18")
