"""Pruning methods, selected by short id (DESIGN.md) from a registry."""

from compute.prune import unstructured  # noqa: F401  (registers its methods)
from compute.prune.base import METHODS, Method, PruneContext, PrunedModel, check_sparsity, get_method

__all__ = ["METHODS", "Method", "PruneContext", "PrunedModel", "check_sparsity", "get_method"]
