"""The committed demo: the built-in digits data set on a laptop CPU (DESIGN.md budgets)."""

from compute.config import ComputeConfig

PRESET = ComputeConfig(methods=("all",))
