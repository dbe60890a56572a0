"""The committed demo: the built-in digits data set on a laptop CPU (DESIGN.md budgets).

Every method at four sparsities on all 96 conditions (clean + 19 corruptions x 5
severities). The test set and float precision are sized for the 20 MB budget: 180 test
images, metrics stored to 12 mantissa bits (3-4 significant digits), and every corrupted
image kept for 36 samples (the sample detail page shows them).
"""

from compute.config import ComputeConfig

PRESET = ComputeConfig(
    methods=("all",),
    corruptions=("all",),
    n_test=180,
    metric_bits=12,
    thumbnail_samples=36,
)
