"""CIFAR-10 at full scale on a CUDA GPU: ResNet-20, the whole test set, every method.

Schedules follow the usual CIFAR recipes. Every method that trains from initialisation
gets the dense model's 160 epochs; imp and lrr retrain each round as open_lth does (the
dense schedule from the rewind step), which makes them the costly methods of the sweep.
"""

from compute.config import ComputeConfig

PRESET = ComputeConfig(
    dataset="cifar10",
    n_test=0,
    architecture="resnet20",
    methods=("all",),
    corruptions=("all",),
    sparsities=(0.5, 0.8, 0.9, 0.95, 0.98),
    epochs=160,
    finetune_epochs=40,
    finetune_lr=0.01,
    round_schedule="rewind",
    rewind_epochs=2.0,
    dst_update_every=100,
    batch_size=128,
    lr=0.1,
    eval_batch_size=1024,
)
