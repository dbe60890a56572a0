"""The shared sidebar filters: what they select, and how they live in the page address.

Streamlit-free. The URL form is short and readable, e.g.
`?snapshot=demo&methods=imp,snip&sparsity=0.5-0.9&families=noise,blur&severities=3,5`;
a parameter that is absent means "all". Unknown or malformed values are dropped, never
an error: a shared link from an older snapshot still opens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from compute import schema
from dashboard.roles import is_dense

KEYS = ("methods", "sparsity", "families", "severities", "models")
CORRUPTION_FAMILIES = tuple(f for f in schema.CONDITION_FAMILIES if f != "clean")


def _first(value) -> str:
    """The value of a parameter; the last one when the address repeats it."""
    if isinstance(value, (list, tuple)):
        return str(value[-1]) if value else ""
    return str(value)


def _repeated(key: str, value) -> list[str]:
    """A notice for a parameter the address gives more than once (`methods=imp&methods=snip`)."""
    if isinstance(value, (list, tuple)) and len(value) > 1:
        return [f"{key} given {len(value)} times (the last, {shown_value(str(value[-1]))}, is used)"]
    return []


def _items(value) -> list[str]:
    return [part for part in _first(value).split(",") if part]


@dataclass(frozen=True)
class Filters:
    methods: tuple[str, ...] | None = None  # None: every method
    sparsity: tuple[float, float] = (0.0, 1.0)  # target sparsity range; dense (0) is the reference
    families: tuple[str, ...] | None = None  # corruption families; clean is always kept
    severities: tuple[int, ...] | None = None
    models: tuple[str, ...] | None = None  # model ids picked on the model map; None: no such narrowing

    @classmethod
    def from_query(cls, params: Mapping, models: pl.DataFrame, conditions: pl.DataFrame) -> Filters:
        """Filters from URL parameters, keeping only values this snapshot has."""
        return read_query(params, models, conditions)[0]

    def to_query(self) -> dict[str, str]:
        """Only what differs from "all", so the default view has a clean address."""
        out = {}
        if self.methods:
            out["methods"] = ",".join(self.methods)
        if self.sparsity != (0.0, 1.0):
            out["sparsity"] = f"{self.sparsity[0]:g}-{self.sparsity[1]:g}"
        if self.families:
            out["families"] = ",".join(self.families)
        if self.severities:
            out["severities"] = ",".join(map(str, self.severities))
        if self.models:
            out["models"] = ",".join(self.models)
        return out

    def select_models(self, models: pl.DataFrame) -> pl.DataFrame:
        """Models of the chosen methods within the sparsity range (dense models pass the range)."""
        keep = pl.lit(True)
        if self.methods:
            keep = keep & pl.col("method").is_in(list(self.methods))
        if self.models:
            keep = keep & pl.col("model_id").is_in(list(self.models))
        return models.filter(keep & (self._in_range() | is_dense()))

    def _in_range(self) -> pl.Expr:
        lo, hi = self.sparsity
        return pl.col("target_sparsity").is_between(lo - 1e-9, hi + 1e-9)

    def why_no_pruned(self, models: pl.DataFrame) -> str:
        """Why the filters select no pruned model of `models` (models.parquet), as a page says it:
        the filter at fault and what to change, in the order the sidebar applies them."""
        pruned = models.filter(~is_dense())
        if pruned.is_empty():
            return "This snapshot holds no pruned model: every model in it is dense."
        if self.methods:
            pruned = pruned.filter(pl.col("method").is_in(list(self.methods)))
            if pruned.is_empty():
                return "The methods selected in the sidebar have no pruned model: add a pruning method there."
        in_range = pruned.filter(self._in_range())
        if in_range.is_empty():
            targets = ", ".join(f"{t:.0%}" for t in sorted(set(pruned["target_sparsity"].to_list())))
            return (
                f"No pruned model's target sparsity lies in {self.sparsity[0]:.0%}–{self.sparsity[1]:.0%} (the "
                f"selected methods' targets: {targets}): widen the target sparsity range in the sidebar."
            )
        if self.models and in_range.filter(pl.col("model_id").is_in(list(self.models))).is_empty():
            return (
                "The models picked on the model map are dense only: pick pruned ones there, or press "
                "'Show all models again' in the sidebar."
            )
        return "Select at least one pruned model in the sidebar."

    def select_conditions(self, conditions: pl.DataFrame, clean: bool = True) -> pl.DataFrame:
        """Conditions of the chosen families and severities; the clean one unless `clean=False`."""
        corrupted = pl.col("corruption") != schema.CLEAN
        keep = corrupted
        if self.families:
            keep = keep & pl.col("family").is_in(list(self.families))
        if self.severities:
            keep = keep & pl.col("severity").is_in(list(self.severities))
        if clean:
            keep = keep | ~corrupted
        return conditions.filter(keep)

    def describe(self) -> str:
        """One line for captions: what the view is restricted to."""
        parts = []
        if self.methods:
            parts.append(f"methods {', '.join(self.methods)}")
        if self.sparsity != (0.0, 1.0):
            parts.append(f"sparsity {self.sparsity[0]:.0%}–{self.sparsity[1]:.0%}")
        if self.families:
            parts.append(f"families {', '.join(self.families)}")
        if self.severities:
            parts.append(f"severities {', '.join(map(str, self.severities))}")
        if self.models:
            parts.append(f"{len(self.models)} models picked on the model map")
        return "; ".join(parts) if parts else "all models and conditions"


def shown_value(value: str) -> str:
    """An address value as a notice may quote it: short, printable."""
    text = "".join(c if c.isprintable() else "?" for c in value)
    return text if len(text) <= 24 else text[:20] + "…"


def read_query(params: Mapping, models: pl.DataFrame, conditions: pl.DataFrame) -> tuple[Filters, list[str]]:
    """Filters from URL parameters, and each value left out (`severities=²`) for a notice."""
    known = {
        "models": set(models["model_id"]),
        "methods": set(models["method"]),
        "families": set(conditions["family"]) - {"clean"},
        "severities": {str(s) for s in conditions.filter(pl.col("severity") > 0)["severity"].to_list()},
    }
    kept: dict[str, tuple] = {}
    ignored: list[str] = []
    for key, allowed in known.items():
        # compared as text, so '²' or 10,000 digits never reach int()
        ignored += _repeated(key, params.get(key, ""))
        items = _items(params.get(key, ""))
        kept[key] = tuple(i for i in items if i in allowed)
        ignored += [f"{key}={shown_value(i)}" for i in items if i not in allowed]
    sparsity = (0.0, 1.0)
    ignored += _repeated("sparsity", params.get("sparsity", ""))
    text = _first(params.get("sparsity", ""))
    low, _, high = text.partition("-")
    reversed_range = False
    try:
        lo, hi = float(low), float(high)
        if 0.0 <= lo <= hi <= 1.0:
            sparsity = (lo, hi)
        reversed_range = 0.0 <= hi < lo <= 1.0
    except ValueError:  # a hand-edited address: fall back to the whole range
        pass
    if reversed_range:
        ignored.append(f"sparsity={shown_value(text)} (reversed: write the lower bound first)")
    elif text and sparsity == (0.0, 1.0) and text != "0-1":
        ignored.append(f"sparsity={shown_value(text)}")
    severities = tuple(sorted({int(s) for s in kept["severities"]}))
    filters = Filters(
        kept["methods"] or None, sparsity, kept["families"] or None, severities or None, kept["models"] or None
    )
    return filters, ignored
