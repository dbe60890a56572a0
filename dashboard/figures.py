"""Plotly figures for the app. Each method keeps one colour and each family one marker."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from compute import schema

#: colour-blind-safe colours (Paul Tol's muted set, Okabe-Ito), fixed per method
METHOD_COLORS: dict[str, str] = {
    "dense": "#000000",
    "random": "#888888",
    "magnitude": "#332288",
    "layer_magnitude": "#88CCEE",
    "imp": "#CC6677",
    "lrr": "#882255",
    "snip": "#117733",
    "grasp": "#44AA99",
    "synflow": "#999933",
    "rigl": "#DDCC77",
    "set": "#E69F00",
    "l1_filter": "#AA4499",
    "edge_popup": "#0072B2",
    "biprop": "#D55E00",
}
_FALLBACK = ["#56B4E9", "#009E73", "#F0E442", "#CC79A7", "#661100", "#6699CC"]
FAMILY_SYMBOLS: dict[str, str] = {
    "dense": "star",
    "unstructured": "circle",
    "structured": "square",
    "at_init": "diamond",
    "dynamic": "triangle-up",
    "supermask": "hexagon",
}

LAYOUT = {
    "template": "plotly_white",
    "font": {"family": "Inter, system-ui, sans-serif", "size": 13},
    "margin": {"l": 60, "r": 20, "t": 50, "b": 55},
    "legend": {"title": {"text": "method"}},
    "hoverlabel": {"font_size": 12},
}


def method_color(method: str) -> str:
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _FALLBACK[sum(map(ord, method)) % len(_FALLBACK)]


def family_symbol(method: str) -> str:
    return FAMILY_SYMBOLS.get(schema.METHOD_FAMILIES.get(method, "unstructured"), "circle")


def _percent_axis(title: str) -> dict:
    return {"title": {"text": title}, "tickformat": ".0%", "rangemode": "normal"}


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14}, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**LAYOUT, xaxis={"visible": False}, yaxis={"visible": False}, height=300)
    return fig


def accuracy_vs_sparsity(curves: pl.DataFrame, dense_value: float | None, y_title: str) -> go.Figure:
    """One line per method (mean over seeds, whiskers min-max), the dense model as a dashed line."""
    pruned = curves.filter(pl.col("method") != "dense")
    if pruned.is_empty():
        return empty_figure("No pruned models in this selection")
    fig = go.Figure()
    for method in pruned["method"].unique(maintain_order=True):
        rows = pruned.filter(pl.col("method") == method).sort("target_sparsity")
        fig.add_trace(
            go.Scatter(
                x=rows["sparsity"],
                y=rows["mean"],
                mode="lines+markers",
                name=method,
                line={"color": method_color(method), "width": 2},
                marker={"symbol": family_symbol(method), "size": 9},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (rows["max"] - rows["mean"]).to_list(),
                    "arrayminus": (rows["mean"] - rows["min"]).to_list(),
                    "visible": bool((rows["seeds"] > 1).any()),
                    "thickness": 1,
                },
                customdata=rows.select("target_sparsity", "seeds").to_numpy(),
                hovertemplate=(
                    f"<b>{method}</b><br>target sparsity %{{customdata[0]:.1%}}<br>measured sparsity %{{x:.2%}}"
                    f"<br>{y_title} %{{y:.2%}}<br>seeds %{{customdata[1]}}<extra></extra>"
                ),
            )
        )
    if dense_value is not None:
        fig.add_hline(
            y=dense_value,
            line={"color": method_color("dense"), "dash": "dash", "width": 1.5},
            annotation_text=f"dense {dense_value:.1%}",
            annotation_position="top right",
        )
    fig.update_layout(
        **LAYOUT,
        title={"text": f"{y_title} against sparsity"},
        xaxis={**_percent_axis("sparsity of the prunable weights (%)")},
        yaxis=_percent_axis(f"{y_title} (%)"),
        height=430,
    )
    return fig


def robustness_scatter(table: pl.DataFrame) -> go.Figure:
    """Clean accuracy against mean corruption accuracy per model; dense marked, with reference lines.

    Models above the horizontal dense line are more robust than the dense model they came from.
    """
    table = table.drop_nulls("mean_corruption_accuracy")
    if table.is_empty():
        return empty_figure("This snapshot has no CIFAR-10-C corruption conditions")
    fig = go.Figure()
    for method in table["method"].unique(maintain_order=True):
        rows = table.filter(pl.col("method") == method)
        is_dense = method == "dense"
        fig.add_trace(
            go.Scatter(
                x=rows["clean_accuracy"],
                y=rows["mean_corruption_accuracy"],
                mode="markers",
                name=method,
                marker={
                    "color": method_color(method),
                    "symbol": family_symbol(method),
                    "size": 18 if is_dense else (8 + 16 * rows["target_sparsity"]).to_list(),
                    "line": {"color": "white", "width": 1},
                    "opacity": 0.9,
                },
                customdata=rows.select("model_id", "sparsity", "relative_robustness").to_numpy(),
                hovertemplate=(
                    "<b>%{customdata[0]}</b><br>sparsity %{customdata[1]:.1%}<br>clean accuracy %{x:.2%}"
                    "<br>mean corruption accuracy %{y:.2%}<br>vs dense %{customdata[2]:+.2%}<extra></extra>"
                ),
            )
        )
    dense = table.filter(pl.col("method") == "dense")
    if not dense.is_empty():
        fig.add_hline(
            y=float(dense["mean_corruption_accuracy"].mean()),
            line={"color": "#000000", "dash": "dash", "width": 1},
            annotation_text="dense robustness",
            annotation_position="top left",
        )
        fig.add_vline(
            x=float(dense["clean_accuracy"].mean()),
            line={"color": "#000000", "dash": "dot", "width": 1},
            annotation_text="dense clean",
            annotation_position="bottom right",
        )
    fig.update_layout(
        **LAYOUT,
        title={"text": "Clean accuracy against mean corruption accuracy (marker size: sparsity)"},
        xaxis=_percent_axis("clean accuracy (%)"),
        yaxis=_percent_axis("mean corruption accuracy (%)"),
        height=480,
    )
    return fig
