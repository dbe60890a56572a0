"""Pruning methods, selected by short id (docs/DESIGN.md) from a registry."""

from compute.prune import at_init, dynamic, iterative, structured, supermask, unstructured  # noqa: F401 (register)
from compute.prune.allocation import ALLOCATIONS, check_sparsity
from compute.prune.base import METHODS, Method, PruneContext, PrunedModel, PruneSettings, get_method

__all__ = [
    "ALLOCATIONS",
    "METHODS",
    "Method",
    "PruneContext",
    "PruneSettings",
    "PrunedModel",
    "check_sparsity",
    "get_method",
]
