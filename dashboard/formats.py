"""How every table of the app shows its columns: one label, one unit and one precision per kind of
value, so that 81.4 % never stands beside 80.93 %, a change never reads -0.0, and a missing value
reads "—". Streamlit-free; `ui.table` applies it, downloads keep the raw values and names.

Kinds: `percent` (a share of 1 shown in %, one decimal), `pts` (percentage points, signed, one
decimal), `share_change` (a change of a share of 1, shown in signed points), `count` (an integer
with thousands separators), `p` (a p-value, three decimals), `degrees` (one decimal), `number`
(two decimals), `text`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MISSING = "—"


@dataclass(frozen=True)
class Column:
    label: str
    kind: str
    help: str | None = None


#: every column a page's table shows, by its name in the data (and in the downloads)
COLUMNS: dict[str, Column] = {
    "model_id": Column("model", "text"),
    "method": Column("method", "text"),
    "family": Column("family", "text"),
    "seed": Column("seed", "count"),
    "target_sparsity": Column("target sparsity", "percent"),
    "sparsity": Column("measured sparsity", "percent", "1 − nonzero prunable weights / the dense parent's"),
    "params_nonzero": Column("nonzero params", "count"),
    "flops": Column("multiply-adds / image", "count"),
    "train_epochs": Column(
        "training epochs", "count",
        "every epoch of training behind the model, the dense training it was pruned from included",
    ),  # fmt: skip
    "clean_accuracy": Column("clean accuracy", "percent"),
    "mean_corruption_accuracy": Column(
        "mean corruption accuracy", "percent",
        "the plain mean over the selected conditions of the 15 CIFAR-10-C corruptions",
    ),  # fmt: skip
    "relative_robustness_pts": Column(
        "relative robustness", "pts", "mean corruption accuracy minus the dense parent's, in percentage points"
    ),
    "accuracy": Column("accuracy", "percent"),
    "vs_dense_pts": Column("vs dense", "pts", "accuracy minus the dense parent's, in percentage points"),
    "clean_p": Column("clean p", "p", "McNemar's exact test against the dense parent, on clean images"),
    "p_value": Column("p", "p", "McNemar's exact test against the dense parent, on the condition shown"),
    "significant": Column("✱", "text", "p below the stated level"),
    "significant_conditions": Column("conditions with p < α", "count"),
    "tested_conditions": Column("conditions tested", "count"),
    "dead_relu": Column("dead ReLUs", "percent", "ReLU output units never active on the clean test images"),
    "dynamic_dead_relu": Column(
        "ReLUs at 0", "percent",
        "per clean test image, the share of ReLU output units at zero, averaged over the images "
        "(the dynamic dead neuron rate of Activating-while-Pruning)",
    ),  # fmt: skip
    "dist_init": Column("‖w − w_init‖", "number", "ℓ2 distance of the conv and linear weights from the initialisation"),
    "dist_dense": Column("‖w − w_dense‖", "number", "ℓ2 distance of the conv and linear weights from the dense one"),
    # fragile samples
    "sample_id": Column("sample", "text"),
    "class_name": Column("class", "text"),
    "fragile": Column("pruned right→wrong", "count", "pruned model × condition pairs"),
    "chances": Column("dense right", "count", "pairs where the dense parent is right"),
    "broken": Column("broken pairs", "count", "model × corruption pairs that break"),
    "lowest_severity": Column("lowest breaking severity", "count"),
    "mean_severity": Column("mean breaking severity", "number", "over the pairs that break"),
    "pairs": Column("model × condition pairs", "count"),
    # per class
    "class": Column("class", "text"),
    "mean_vs_dense_pts": Column("mean change vs dense", "pts", "over the selected pruned models"),
    "worst_vs_dense_pts": Column("worst change vs dense", "pts"),
    "worst_model": Column("most hurt by", "text", "the model whose change on the class is the lowest"),
    "images_x_conditions": Column("images × conditions", "count"),
    # per layer
    "layer": Column("layer", "text"),
    "kind": Column("kind", "text"),
    "prunable": Column("prunable", "text"),
    "params": Column("weights", "count"),
    "nonzero": Column("nonzero weights", "count"),
    # global geometry
    "samples": Column("samples", "count"),
    "axis": Column("axis", "text"),
    "change": Column("change", "number"),
    "feat_norm": Column("feature length ‖f‖", "number"),
    "geom_margin": Column("geometric margin", "number"),
    "p_true": Column("p(true class)", "number"),
}


def column(name: str, dtype: str = "") -> Column:
    """The catalogue's entry, or one made from the name and the type (`dtype`: polars' name)."""
    if name in COLUMNS:
        return COLUMNS[name]
    if name.endswith("_pts"):
        kind = "pts"
    elif dtype.startswith(("Int", "UInt")):
        kind = "count"
    elif dtype.startswith("Float"):
        kind = "number"
    else:
        kind = "text"
    return Column(name.replace("_", " "), kind)


def shown(value, kind: str) -> str:
    """One value as a table shows it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if kind == "text":
        return "yes" if value is True else "no" if value is False else str(value)
    if kind == "count":
        return f"{int(value):,}"
    if kind == "percent":
        return _unsigned_zero(f"{100 * value:,.1f}") + " %"
    if kind in ("pts", "share_change"):
        text = f"{100 * value if kind == 'share_change' else value:+.1f}"
        return ("0.0" if text in ("+0.0", "-0.0") else text) + " pts"
    if kind == "p":
        return "< 0.001" if value < 0.001 else f"{value:.3f}"
    if kind == "degrees":
        return _unsigned_zero(f"{value:.1f}") + "°"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return _unsigned_zero(f"{value:,.2f}")


def _unsigned_zero(text: str) -> str:
    """'-0.0' (a small negative rounded away) reads as 0."""
    return text[1:] if text.startswith("-") and not text.strip("-0.,") else text
