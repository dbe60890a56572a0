"""CIFAR-10 at full scale on a CUDA GPU: ResNet-20, the whole test set."""

from compute.config import ComputeConfig

PRESET = ComputeConfig(
    dataset="cifar10",
    n_test=0,
    architecture="resnet20",
    sparsities=(0.5, 0.8, 0.9, 0.95, 0.98),
    epochs=160,
    finetune_epochs=40,
    batch_size=128,
    lr=0.1,
    finetune_lr=0.01,
    eval_batch_size=4096,
)
