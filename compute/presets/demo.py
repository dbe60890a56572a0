"""The committed demo: the built-in digits data set on a laptop CPU (docs/DESIGN.md budgets).

Every method at four sparsities on all 96 conditions (clean + 19 corruptions x 5
severities). The test set and float precision are sized for the 20 MB budget: 180 test
images, metrics stored to 12 mantissa bits (3-4 significant digits), and every corrupted
image kept for 36 samples (the sample detail page shows them). Patch occlusion of 6 of
them (8 px patches every 4 px: 49 positions, on clean and the 19 corruptions at severity
3) adds 53 models x 20 conditions x 6 samples x 49 = 312k forwards and rows, about 9 s and
1.4 MB (measured on 2 CPU cores with the tiny preset's models, the same architecture: 1.4 ms
per model x condition x sample, one batch of 49 images, and 4.3 bytes per row at 12
mantissa bits); the size sets the number.

Every method that trains from initialisation gets the dense model's 20 epochs. The
supermask scores take 240 optimizer steps here against the authors' 39,000 (100 CIFAR
epochs at lr 0.1), so their learning rate is raised to keep lr x steps about the same
and the masks move away from the random initial top-k.
"""

from compute.config import ComputeConfig

PRESET = ComputeConfig(
    methods=("all",),
    corruptions=("all",),
    n_test=180,
    metric_bits=12,
    thumbnail_samples=36,
    occlusion_samples=6,
    supermask_lr=16.0,
)
