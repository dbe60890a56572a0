"""Plotly figures for the app. Each method keeps one colour and each family one marker."""

from __future__ import annotations

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import polars as pl

from compute import schema
from dashboard.queries import condition_label, positions
from dashboard.roles import is_dense

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

#: class colours (d3's category10: no two of its ten closer than ΔE 27) and, as a second cue that
#: survives colour blindness and more than ten classes, a marker shape per class
CLASS_COLORS = tuple(plotly.colors.qualitative.D3)
CLASS_SYMBOLS = (
    "circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down", "star", "hexagon", "pentagon",
)  # fmt: skip


def class_marker(index: int) -> dict:
    """Colour and shape of class `index`: unique up to 100 classes."""
    return {
        "color": CLASS_COLORS[index % len(CLASS_COLORS)],
        "symbol": CLASS_SYMBOLS[(index + index // len(CLASS_COLORS)) % len(CLASS_SYMBOLS)],
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


#: the marker of a dense model, whatever its method's label (an `evaluate` snapshot names it freely)
DENSE_SYMBOL = FAMILY_SYMBOLS["dense"]
#: a dense model's marker size where size shows sparsity: the largest, so the reference is never the smallest
DENSE_SIZE = 22


def family_symbol(method: str) -> str:
    return FAMILY_SYMBOLS.get(schema.METHOD_FAMILIES.get(method, "unstructured"), "circle")


#: above this many points a scatter is drawn with WebGL; below it SVG draws faster, with no GL context to set up
WEBGL_POINTS = 2_000


def points_trace(count: int, polar: bool = False, **trace):
    """A scatter trace of `count` points in the cheaper renderer for that many: SVG for a few
    hundred (a demo's), WebGL for the tens of thousands of a CIFAR snapshot."""
    if polar:
        return (go.Scatterpolargl if count > WEBGL_POINTS else go.Scatterpolar)(**trace)
    return (go.Scattergl if count > WEBGL_POINTS else go.Scatter)(**trace)


def _percent_axis(title: str, span: float = 1.0) -> dict:
    """An axis of shares drawn in %: whole percents, or tenths where the axis spans under 10 points
    (whole percents would repeat a tick label there)."""
    return {"title": {"text": title}, "tickformat": ".0%" if span >= 0.1 else ".1%", "rangemode": "normal"}


def fitted_range(shares: pl.Series, pad: float = 0.08, least: float = 0.04) -> list[float]:
    """An axis range around accuracies (0-1): the data with a margin, at least `least` wide, never
    beyond 0 or 100 % by more than the margin, so a single model does not stretch the axis."""
    lo, hi = float(shares.min()), float(shares.max())
    span = max(hi - lo, least)
    margin = (span - (hi - lo)) / 2 + pad * span
    return [max(lo - margin, -0.01), min(hi + margin, 1.01)]


def empty_figure(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, font={"size": 14}, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(**LAYOUT, xaxis={"visible": False}, yaxis={"visible": False}, height=300)
    return fig


def robustness_scatter(table: pl.DataFrame) -> go.Figure:
    """Clean accuracy against mean corruption accuracy per model; dense marked, with reference lines.

    Models above the horizontal dense line are more robust than the dense model they came from.
    """
    table = table.drop_nulls("mean_corruption_accuracy")
    if table.is_empty():
        return empty_figure("No condition of the 15 CIFAR-10-C corruptions in this selection (the extras do not count)")
    y = table["mean_corruption_accuracy"]
    x_range, y_range = fitted_range(table["clean_accuracy"]), fitted_range(y)
    fig = go.Figure()
    # the role comes from models.parquet (models_table's is_dense), never from a method's name
    groups = table.select("method", "is_dense").unique(maintain_order=True).sort("is_dense", maintain_order=True)
    for method, dense_role in groups.iter_rows():  # dense last, drawn on top of the rest
        rows = table.filter((pl.col("method") == method) & (pl.col("is_dense") == dense_role))
        fig.add_trace(
            go.Scatter(
                x=rows["clean_accuracy"],
                y=rows["mean_corruption_accuracy"],
                mode="markers",
                name=method,
                marker={
                    "color": method_color(method),
                    "symbol": DENSE_SYMBOL if dense_role else family_symbol(method),
                    "size": DENSE_SIZE if dense_role else (8 + 16 * rows["target_sparsity"]).to_list(),
                    "line": {"color": "white", "width": 2 if dense_role else 1},
                    "opacity": 1.0 if dense_role else 0.85,
                },
                customdata=rows.select("model_id", "sparsity", 100 * pl.col("relative_robustness")).to_numpy(),
                hovertemplate=(
                    "<b>%{customdata[0]}</b><br>sparsity %{customdata[1]:.1%}<br>clean accuracy %{x:.2%}"
                    "<br>mean corruption accuracy %{y:.2%}<br>vs dense %{customdata[2]:+.2f} pts<extra></extra>"
                ),
            )
        )
    dense = table.filter(pl.col("is_dense"))
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
        xaxis={**_percent_axis("clean accuracy (%)", np.ptp(x_range)), "range": x_range},
        yaxis={**_percent_axis("mean corruption accuracy (%)", np.ptp(y_range)), "range": y_range},
        height=480,
    )
    return fig


def heatmap(
    z: list[list[float | None]] | np.ndarray,
    x: list[str],
    y: list[str],
    title: str,
    colorbar: str,
    *,
    diverging: bool = False,
    zrange: tuple[float, float] | None = None,
    percent: bool = True,
    x_title: str = "",
    y_title: str = "",
    hover: str | None = None,
    higher_is_better: bool = True,
    masked: list[list[bool]] | np.ndarray | None = None,
    masked_text: str = "",
) -> go.Figure:
    """A labelled matrix: accuracy (sequential, %) or a change (diverging, centred at 0, in points when
    `percent`) or any other value (`percent=False`). Every row and column keeps its label.

    One diverging convention on every page: blue is better than the dense parent, red worse; a change
    where lower is better (`higher_is_better=False`, e.g. excess error) flips the scale, not the meaning.
    Cells `masked` (not informative, e.g. both models near chance) are drawn grey, with `masked_text` on
    hover, instead of a colour."""
    if not isinstance(z, np.ndarray):
        z = [[np.nan if v is None else v for v in row] for row in z]
    z = np.asarray(z, dtype=float)
    if z.size == 0:
        return empty_figure("Nothing to show for this selection")
    scale = 100.0 if percent else 1.0  # shares are drawn in % (levels) or points (changes)
    z = z * scale
    hidden = np.zeros(z.shape, dtype=bool) if masked is None else np.asarray(masked, dtype=bool)
    z = np.where(hidden, np.nan, z)
    if diverging:
        bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        lo, hi = (scale * zrange[0], scale * zrange[1]) if zrange else (-(bound or 1.0), bound or 1.0)
        colour = {"colorscale": "RdBu" if higher_is_better else "RdBu_r", "zmid": 0.0, "zmin": lo, "zmax": hi}
        if percent:
            colorbar = f"{colorbar}<br><sup>blue: better than dense<br>red: worse</sup>"
    else:
        lo, hi = (scale * zrange[0], scale * zrange[1]) if zrange else (0.0, scale)
        colour = {"colorscale": "Viridis", "zmin": lo, "zmax": hi}
    unit = (" pts" if diverging else "%") if percent else ""
    fmt = ("{:+.1f}" if diverging else "{:.0f}") if percent else "{:.2f}"
    # numbers in the cells only where they stay legible; 40,000 strings built and checked for nothing took a second
    labelled = len(x) * len(y) <= 900
    text = [["" if not np.isfinite(v) else fmt.format(v) for v in row] for row in z] if labelled else None
    if hover is None:
        hover = ("%{z:+.1f} pts" if diverging else "%{z:.1f}%") if percent else "%{z:.3f}"
    fig = go.Figure(
        go.Heatmap(
            z=z, x=x, y=y, text=text, texttemplate="%{text}" if labelled else None,
            textfont={"size": 10},
            colorbar={
                "title": {"text": colorbar}, "ticksuffix": unit, "tickformat": "+.0f" if diverging and percent else "",
            },
            hovertemplate="<b>%{y}</b><br>%{x}: " + hover + "<extra></extra>", **colour,
        )
    )  # fmt: skip
    if hidden.any():
        fig.add_trace(
            go.Heatmap(
                z=np.where(hidden, 1.0, np.nan), x=x, y=y, colorscale=[[0, "#D9D9D9"], [1, "#D9D9D9"]],
                showscale=False, text=np.where(hidden, "≈ chance", ""), texttemplate="%{text}",
                textfont={"size": 9, "color": "#555555"}, name="not informative",
                hovertemplate="<b>%{y}</b><br>%{x}: " + masked_text + "<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": {}},
        title={"text": title},
        xaxis={**_every_label(x), "title": {"text": x_title}, "tickangle": -90 if len(x) > 20 else -40},
        yaxis={**_every_label(y), "title": {"text": y_title}, "autorange": "reversed"},
        height=max(340, 180 + 16 * len(y) + 7 * max(map(len, x), default=0)),
    )
    return fig


def _every_label(names: list[str]) -> dict:
    """A categorical axis that labels every category, in a font small enough to fit many."""
    return {
        "tickmode": "array", "tickvals": list(names), "automargin": True,
        "tickfont": {"size": 11 if len(names) <= 20 else 10 if len(names) <= 40 else 9},
    }  # fmt: skip


def outcome_grid(rows: pl.DataFrame, model_order: list[str], class_names: list[str], title: str) -> go.Figure:
    """One sample: p(true class) for every condition (rows) and model (columns), the predicted class
    on hover, and every wrong prediction marked with a cross, whatever the size of the grid.

    Conditions run down the side so that each keeps a horizontal, legible label."""
    if rows.is_empty():
        return empty_figure("Nothing to show for this selection")
    conditions = rows.select("condition_id", "corruption", "severity").unique().sort("condition_id")
    labels = [condition_label(c, s) for _, c, s in conditions.iter_rows()]
    found = set(rows["model_id"].unique().to_list())
    models = [m for m in model_order if m in found]
    cells = rows.filter(pl.col("model_id").is_in(models))
    # positions and names by array indexing: a loop over the rows took most of the page at 19,000 cells
    i = positions(cells["condition_id"], conditions["condition_id"].to_list())
    j = positions(cells["model_id"].cast(pl.String), models)
    pred = cells["pred"].to_numpy().astype(np.int64)
    known = (pred >= 0) & (pred < len(class_names))
    names = pred.astype(str).astype(object)
    names[known] = np.asarray(class_names, dtype=object)[pred[known]]
    z = np.full((len(labels), len(models)), np.nan)
    z[i, j] = cells["p_true"].to_numpy()
    predicted = np.full((len(labels), len(models)), "", dtype=object)  # the hover's class name, kept small
    predicted[i, j] = names
    wrong = ~cells["correct"].to_numpy()
    wrong_x, wrong_y = np.asarray(models, dtype=object)[j[wrong]], np.asarray(labels, dtype=object)[i[wrong]]
    wrong_pred = names[wrong]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=models, y=labels, customdata=predicted, colorscale="Viridis", zmin=0.0, zmax=1.0,
            colorbar={"title": {"text": "p(true class)"}},
            hovertemplate="<b>%{x}</b><br>%{y}: p(true class) %{z:.3f}<br>predicted %{customdata}<extra></extra>",
        )
    )  # fmt: skip
    fig.add_trace(
        points_trace(
            len(wrong_x), x=wrong_x, y=wrong_y, mode="markers", name="wrong prediction", customdata=wrong_pred,
            # white with a black edge: seen on the dark cells (low p(true class)) and in the legend
            marker={"symbol": "x", "size": 9 if len(labels) * len(models) <= 900 else 7, "color": "#FFFFFF",
                    "line": {"width": 1, "color": "#000000"}},
            showlegend=True,
            hovertemplate="<b>%{x}</b><br>%{y}: wrong, predicted %{customdata}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": {"orientation": "h", "x": 0, "y": 1.0, "yanchor": "bottom", "xanchor": "left"}},
        title={"text": title},
        xaxis={**_every_label(models), "title": {"text": "model"}, "side": "bottom", "tickangle": -60},
        yaxis={**_every_label(labels), "title": {"text": "condition"}, "autorange": "reversed"},
        height=220 + 14 * len(labels),
    )  # fmt: skip
    return fig


def family_heatmap(table: pl.DataFrame, model_order: list[str], relative: bool) -> go.Figure:
    """Models (rows, in `model_order`) against condition families: accuracy, or its change vs dense."""
    if table.is_empty():
        return empty_figure("No accuracy per family in this selection")
    families = [f for f in schema.CONDITION_FAMILIES if f in table["family"].unique().to_list()]
    models = [m for m in model_order if m in table["model_id"].unique().to_list()]
    lookup = {(m, f): a for m, f, a in table.select("model_id", "family", "accuracy").iter_rows()}
    z = [[lookup.get((m, f)) for f in families] for m in models]
    title = "Accuracy by corruption family" + (" relative to the dense model" if relative else "")
    colorbar = "change vs dense" if relative else "accuracy"
    return heatmap(
        z, families, models, title, colorbar, diverging=relative, x_title="condition family", y_title="model"
    )


def method_lines(
    curves: pl.DataFrame, reference: float | None, y_title: str, x_title: str, x_percent: bool, relative: bool = False,
    empty: str = "No pruned models in this selection",
) -> go.Figure:
    """One line per method (mean over seeds, whiskers min-max) against `x`, the dense model as a dashed line.
    Accuracy is drawn in %, a change relative to dense (`relative`) in percentage points."""
    pruned = curves  # the pages pass the pruned models' curves; the dense parent is the reference line
    if pruned.is_empty():
        return empty_figure(empty)
    fig = go.Figure()
    x_hover = "%{x:.1%}" if x_percent else "%{x:,.0f}"
    y_hover = "%{y:+.1f} pts" if relative else "%{y:.1f}%"
    for method in pruned["method"].unique(maintain_order=True):
        rows = pruned.filter(pl.col("method") == method).sort("x", descending=not x_percent)
        mean, low, high = (100 * rows[c] for c in ("mean", "min", "max"))
        fig.add_trace(
            go.Scatter(
                x=rows["x"], y=mean, mode="lines+markers", name=method,
                line={"color": method_color(method), "width": 2},
                marker={"symbol": family_symbol(method), "size": 9},
                error_y={
                    "type": "data", "symmetric": False, "array": (high - mean).to_list(),
                    "arrayminus": (mean - low).to_list(), "visible": bool((rows["seeds"] > 1).any()), "thickness": 1,
                },
                customdata=rows.select("target_sparsity", "seeds", "models").to_numpy(),
                hovertemplate=(
                    f"<b>{method}</b><br>target sparsity %{{customdata[0]:.1%}}<br>{x_title}: {x_hover}"
                    f"<br>{y_title}: {y_hover}<br>%{{customdata[2]}}<extra></extra>"
                ),
            )
        )  # fmt: skip
    if reference is not None:
        fig.add_hline(
            y=100 * reference, line={"color": method_color("dense"), "dash": "dash", "width": 1.5},
            annotation_text=f"dense {100 * reference:+.1f} pts" if relative else f"dense {reference:.1%}",
            annotation_position="top right",
        )  # fmt: skip
    xaxis = _percent_axis(x_title) if x_percent else {"title": {"text": x_title}, "type": "log"}
    # the axis says the unit, the chart's title the measure: a long measure ("change in accuracy under contrast
    # (severity 3)") written up the axis ran past the plot and over the title
    yaxis = {"title": {"text": "change vs dense (pts)" if relative else "accuracy (%)"},
             "ticksuffix": "" if relative else "%"}  # fmt: skip
    if relative:
        yaxis["tickformat"] = "+.0f"
    fig.update_layout(
        **LAYOUT, title={"text": f"{y_title} against {x_title.split(' (')[0]}"}, xaxis=xaxis, yaxis=yaxis, height=440
    )
    return fig


def severity_lines(
    curves: pl.DataFrame, model_id: str, y: str = "accuracy", y_title: str = "accuracy (%)", title: str = ""
) -> go.Figure:
    """One model's `y` against severity, one line per corruption (0 = clean)."""
    rows = curves.filter(pl.col("model_id") == model_id)
    if rows.is_empty():
        return empty_figure("No corrupted conditions in this selection")
    percent = y == "accuracy"
    fig = go.Figure()
    palette = dict(zip(schema.CORRUPTION_FAMILIES, _CORRUPTION_COLOURS, strict=False))
    for corruption in [c for c in schema.CORRUPTION_FAMILIES if c in rows["corruption"].unique().to_list()]:
        line = rows.filter(pl.col("corruption") == corruption).sort("severity")
        value = "%{y:.2%}" if percent else "%{y:.3g}"
        fig.add_trace(
            go.Scatter(
                x=line["severity"], y=line[y], mode="lines+markers", name=corruption,
                line={"color": palette.get(corruption), "dash": _FAMILY_DASH[schema.CORRUPTION_FAMILIES[corruption]]},
                hovertemplate=f"<b>{corruption}</b><br>severity %{{x}}<br>{y_title}: {value}<extra>{model_id}</extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": {"title": {"text": "corruption"}}},
        title={"text": title or f"Accuracy against severity: {model_id}"},
        xaxis={"title": {"text": "severity (0 = clean)"}, "dtick": 1},
        yaxis=_percent_axis(y_title) if percent else {"title": {"text": y_title}},
        height=460,
    )
    return fig


_CORRUPTION_COLOURS = [
    "#332288", "#6699CC", "#88CCEE", "#117733", "#44AA99", "#999933", "#DDCC77", "#CC6677", "#882255",
    "#AA4499", "#E69F00", "#D55E00", "#0072B2", "#009E73", "#661100", "#888888", "#000000", "#56B4E9", "#CC79A7",
]  # fmt: skip
_FAMILY_DASH = {"noise": "solid", "blur": "dot", "weather": "dash", "digital": "dashdot", "extra": "longdash"}


METRIC_TITLES = {
    "feat_norm": "feature length ‖f‖",
    "angle_true": "angle to the true class (degrees)",
    "angle_pred": "angle to the predicted class (degrees)",
    "geom_margin": "geometric margin (feature-space distance)",
    "logit_margin": "logit margin",
    "p_true": "probability of the true class",
    "confidence": "confidence (largest probability)",
    "loss": "cross-entropy loss",
}


def distributions(
    rows: pl.DataFrame, metric: str, model_order: list[str], condition_labels: dict[int, str]
) -> go.Figure:
    """Box plots of one per-sample metric per model, one box per condition side by side."""
    if rows.is_empty():
        return empty_figure("No per-sample rows in this selection")
    fig = go.Figure()
    palette = ["#0F766E", "#D55E00", "#332288", "#999933"]
    for index, (condition_id, label) in enumerate(condition_labels.items()):
        part = rows.filter(pl.col("condition_id") == condition_id).drop_nans(metric)
        if part.is_empty():
            continue
        fig.add_trace(
            go.Box(
                x=part["model_id"], y=part[metric], name=label, marker_color=palette[index % len(palette)],
                boxpoints=False, customdata=part.select("sample_id").to_numpy(),
                hovertemplate=f"<b>%{{x}}</b><br>{label}<br>{METRIC_TITLES.get(metric, metric)}: %{{y:.3g}}"
                "<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": {"title": {"text": "condition"}}},
        boxmode="group",
        title={"text": f"{METRIC_TITLES.get(metric, metric)} per model"},
        xaxis={"title": {"text": "model"}, "categoryorder": "array", "categoryarray": model_order, "tickangle": -35},
        yaxis={"title": {"text": METRIC_TITLES.get(metric, metric)}},
        height=460,
    )
    return fig


def angle_sector(angles: pl.Series, step: float = 10.0, least: float = 30.0) -> list[float]:
    """The part of the 0-180° half disk the angles occupy, out to whole `step`s and at least `least` wide."""
    angles = angles.drop_nulls().drop_nans()
    if angles.is_empty():
        return [0.0, 180.0]
    lo, hi = step * np.floor(float(angles.min()) / step), step * np.ceil(float(angles.max()) / step)
    if hi - lo < least:
        hi = min(lo + least, 180.0)
        lo = hi - least
    return [max(float(lo), 0.0), min(float(hi), 180.0)]


def polar_pair(rows: pl.DataFrame, model_ids: list[str], title: str) -> go.Figure:
    """Angle-length plots of two models side by side: radius the feature length, angle the
    angle to the true class direction; right and wrong predictions in two colours."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=len(model_ids), specs=[[{"type": "polar"}] * len(model_ids)], subplot_titles=model_ids
    )
    top = float(rows["feat_norm"].max() or 1.0) if not rows.is_empty() else 1.0
    sector = angle_sector(rows["angle_true"])
    for col, model in enumerate(model_ids, start=1):
        part = rows.filter(pl.col("model_id") == model).drop_nans("angle_true")
        for correct, colour, name in ((True, "#0F766E", "right"), (False, "#D55E00", "wrong")):
            points = part.filter(pl.col("correct") == correct)
            fig.add_trace(
                points_trace(
                    rows.height, polar=True, r=points["feat_norm"], theta=points["angle_true"], mode="markers",
                    name=name,
                    marker={"color": colour, "size": 6, "opacity": 0.75}, legendgroup=name, showlegend=col == 1,
                    customdata=points.select("sample_id", "class_name").to_numpy(),
                    hovertemplate=(
                        "sample %{customdata[0]} (class %{customdata[1]})<br>length %{r:.3g}"
                        f"<br>angle %{{theta:.1f}}°<extra>{model}</extra>"
                    ),
                ),
                row=1, col=col,
            )  # fmt: skip
        fig.update_layout(
            {
                f"polar{col if col > 1 else ''}": {
                    "sector": sector, "angularaxis": {"direction": "counterclockwise", "rotation": 0},
                    "radialaxis": {"range": [0, top * 1.05], "title": {"text": "‖f‖"}},
                }
            }
        )  # fmt: skip
    fig.update_layout(**{**LAYOUT, "legend": {"title": {"text": "prediction"}}}, title={"text": title}, height=460)
    return fig


def shift_scatter(table: pl.DataFrame, model_id: str) -> go.Figure:
    """How pruning moved each sample: change of feature length against change of angle."""
    if table.is_empty():
        return empty_figure("No samples to compare")
    colours = {
        "broken by pruning": "#D55E00",
        "fixed by pruning": "#0072B2",
        "right in both": "#B0B7B5",
        "wrong in both": "#000000",
    }
    fig = go.Figure()
    for outcome, colour in colours.items():
        part = table.filter(pl.col("outcome") == outcome)
        fig.add_trace(
            points_trace(
                table.height, x=part["d_length"], y=part["d_angle"], mode="markers", name=f"{outcome} ({len(part)})",
                marker={"color": colour, "size": 7, "opacity": 0.8},
                customdata=part.select("sample_id", "class_name", "d_margin").to_numpy(),
                hovertemplate=(
                    "sample %{customdata[0]} (class %{customdata[1]})<br>Δ length %{x:+.3g}<br>Δ angle %{y:+.2f}°"
                    "<br>Δ margin %{customdata[2]:+.3g}<extra></extra>"
                ),
            )
        )  # fmt: skip
    fig.add_hline(y=0, line={"color": "#888888", "width": 1})
    fig.add_vline(x=0, line={"color": "#888888", "width": 1})
    fig.update_layout(
        **{**LAYOUT, "legend": {"title": {"text": "outcome"}}},
        title={"text": f"From the dense model to {model_id}: each sample's move in feature space"},
        xaxis={"title": {"text": "change of feature length ‖f‖"}},
        yaxis={"title": {"text": "change of angle to the true class (degrees)"}},
        height=480,
    )
    return fig


def class_norms(classes: pl.DataFrame, models: pl.DataFrame, model_ids: list[str]) -> go.Figure:
    """Weight-row norm per class, one bar group per model (`models`: models.parquet, for each
    model's method and role)."""
    fig = go.Figure()
    facts = {m: (method, dense) for m, method, dense in models.select("model_id", "method", is_dense()).iter_rows()}
    for model in model_ids:
        rows = classes.filter(pl.col("model_id") == model).sort("class")
        method, dense = facts.get(model, ("", False))
        fig.add_trace(
            go.Bar(
                x=rows["class_name"], y=rows["weight_norm"], name=model, marker_color=method_color(method),
                marker_pattern_shape="" if dense else "/",
                hovertemplate=f"<b>{model}</b><br>class %{{x}}<br>‖w‖ %{{y:.3g}}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": {"title": {"text": "model"}}},
        barmode="group",
        title={"text": "Class directions: length of each class's weight vector"},
        xaxis={"title": {"text": "class"}, "type": "category"},
        yaxis={"title": {"text": "weight-row norm ‖w_c‖"}},
        height=400,
    )
    return fig


def _embedding_traces(points: pl.DataFrame, colour: str, legend: bool = True) -> list:
    """The points of one embedding, one trace per colour value (or one with a colour scale)."""
    if colour == "fragile":
        return [
            points_trace(
                points.height, x=points["x"], y=points["y"], mode="markers", name="samples", showlegend=False,
                marker={
                    "color": points["fragile"], "colorscale": "Viridis", "size": 7, "showscale": legend,
                    # it counts (pruned model, condition) pairs, not models
                    "colorbar": {"title": {"text": "pruned model x<br>condition pairs<br>it breaks"}},
                },
                customdata=points.select("sample_id", "class_name", "fragile").to_numpy(),
                hovertemplate=(
                    "sample %{customdata[0]} (class %{customdata[1]})<br>wrong in %{customdata[2]} (pruned model, "
                    "condition) pairs whose dense parent is right<extra></extra>"
                ),
            )
        ]  # fmt: skip
    traces = []
    by_class = colour == "class_name"
    order = points.sort("label")[colour].unique(maintain_order=True) if by_class else points[colour].unique().sort()
    for value in order:
        part = points.filter(pl.col(colour) == value)
        marker = {"size": 7, "opacity": 0.85}
        if by_class:
            marker |= class_marker(int(part["label"][0]))
        else:
            marker["color"] = {"right": "#0F766E", "wrong": "#D55E00"}.get(value)
        traces.append(
            points_trace(
                points.height, x=part["x"], y=part["y"], mode="markers", name=str(value), marker=marker,
                legendgroup=str(value),
                showlegend=legend, customdata=part.select("sample_id", "class_name").to_numpy(),
                hovertemplate=(
                    f"sample %{{customdata[0]}} (class %{{customdata[1]}})<br>{colour}: {value}<extra></extra>"
                ),
            )
        )  # fmt: skip
    return traces


def embedding_scatter(points: pl.DataFrame, colour: str, title: str) -> go.Figure:
    """The 2-D projection of clean features; `colour` is a column (class_name, outcome or
    fragile). Points carry their sample_id for selection."""
    if points.is_empty():
        return empty_figure("No embedding for this model")
    fig = go.Figure(_embedding_traces(points, colour))
    fig.update_layout(
        **{**LAYOUT, "legend": {"title": {"text": colour.replace("_", " ")}}},
        title={"text": title},
        xaxis={"title": {"text": "first principal component of the clean features"}},
        yaxis={"title": {"text": "second principal component"}},
        dragmode="lasso",
        height=520,
    )
    return fig


def aligned_embeddings(
    parent: pl.DataFrame, aligned: pl.DataFrame, colour: str, titles: tuple[str, str], moves: bool
) -> go.Figure:
    """Two embeddings side by side on the same axes: the dense parent's, and the pruned model's
    rotated onto it; with `moves`, a segment from each sample's place under the parent to its place
    under the pruned model."""
    from plotly.subplots import make_subplots

    if parent.is_empty() or aligned.is_empty():
        return empty_figure("No embedding for this pair of models")
    fig = make_subplots(rows=1, cols=2, shared_xaxes=True, shared_yaxes=True, subplot_titles=titles)
    for trace in _embedding_traces(parent, colour):
        fig.add_trace(trace, row=1, col=1)
    if moves:
        pairs = parent.select("sample_id", "x", "y").join(
            aligned.select("sample_id", pl.col("x").alias("x2"), pl.col("y").alias("y2")), on="sample_id"
        )
        gaps = [None] * pairs.height
        xs = [v for triple in zip(pairs["x"], pairs["x2"], gaps, strict=True) for v in triple]
        ys = [v for triple in zip(pairs["y"], pairs["y2"], gaps, strict=True) for v in triple]
        fig.add_trace(
            points_trace(pairs.height, x=xs, y=ys, mode="lines", name="move from dense",
                         line={"color": "#BBBBBB", "width": 1},
                         hoverinfo="skip", hovertemplate="move<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
    for trace in _embedding_traces(aligned, colour, legend=False):
        fig.add_trace(trace, row=1, col=2)
    # the legend in a row above the panels: at the right it would sit on the colour bar's title
    legend = {"title": {"text": colour.replace("_", " ")}, "orientation": "h", "x": 0, "y": 1.12,
              "xanchor": "left", "yanchor": "bottom"}  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": legend, "margin": {**LAYOUT["margin"], "t": 110}},
        title={"text": "Aligned with the dense parent (orthogonal Procrustes, the same axes)"},
        height=560,
    )
    fig.update_xaxes(title_text="first principal component (parent's axes)")
    fig.update_yaxes(title_text="second principal component", row=1, col=1)
    return fig


def model_map(points: pl.DataFrame, edges: list[tuple[int, int]], title: str) -> go.Figure:
    """Models placed by the similarity of their per-sample geometry, the minimum spanning tree of
    their distances drawn between them; colour the method, marker the family, size the sparsity.
    `points`: model_id, method, is_dense, target_sparsity, x, y, clean_accuracy, relative_robustness."""
    if points.is_empty():
        return empty_figure("No models to place")
    fig = go.Figure()
    xs, ys = points["x"].to_list(), points["y"].to_list()
    fig.add_trace(
        go.Scatter(
            x=[v for i, j in edges for v in (xs[i], xs[j], None)],
            y=[v for i, j in edges for v in (ys[i], ys[j], None)],
            mode="lines", name="spanning tree", line={"color": "#BBBBBB", "width": 1}, hoverinfo="skip",
            hovertemplate="spanning tree<extra></extra>",
        )
    )  # fmt: skip
    groups = points.select("method", "is_dense").unique(maintain_order=True).sort("is_dense", maintain_order=True)
    for method, dense_role in groups.iter_rows():  # dense last, on top, as the largest marker
        rows = points.filter((pl.col("method") == method) & (pl.col("is_dense") == dense_role))
        fig.add_trace(
            go.Scatter(
                x=rows["x"], y=rows["y"], mode="markers", name=method,
                marker={"color": method_color(method), "symbol": DENSE_SYMBOL if dense_role else family_symbol(method),
                        "size": DENSE_SIZE if dense_role else (9 + 16 * rows["target_sparsity"]).to_list(),
                        "line": {"color": "white", "width": 1}},
                customdata=rows.select(
                    "model_id", "target_sparsity", "clean_accuracy", 100 * pl.col("relative_robustness")
                ).to_numpy(),
                hovertemplate=(
                    "<b>%{customdata[0]}</b><br>target sparsity %{customdata[1]:.0%}<br>clean accuracy "
                    "%{customdata[2]:.1%}<br>relative robustness %{customdata[3]:+.1f} pts<extra></extra>"
                ),
            )
        )  # fmt: skip
    fig.update_layout(
        **LAYOUT, title={"text": title}, height=560, dragmode="lasso",
        xaxis={"title": {"text": "map axis 1"}, "zeroline": False},
        yaxis={"title": {"text": "map axis 2"}, "zeroline": False, "scaleanchor": "x"},
    )  # fmt: skip
    return fig


def layer_profile(rows: pl.DataFrame, layer_order: list[str], title: str) -> go.Figure:
    """Share of each dense layer's weights removed, one line per model, layers in network order;
    rows: model_id, method, layer, removed, params, nonzero, prunable."""
    if rows.is_empty():
        return empty_figure("No per-layer rows for this selection")
    fig = go.Figure()
    position = {name: i for i, name in enumerate(layer_order)}
    for model in rows["model_id"].unique(maintain_order=True):
        part = rows.filter(pl.col("model_id") == model).sort(pl.col("layer").replace_strict(position, default=None))
        method = part["method"][0]
        fig.add_trace(
            go.Scatter(
                x=part["layer"], y=100 * part["removed"], mode="lines+markers", name=model,
                line={"color": method_color(method), "width": 2}, marker={"symbol": family_symbol(method), "size": 8},
                customdata=part.select("params", "nonzero", "prunable").to_numpy(),
                hovertemplate=(
                    f"<b>{model}</b><br>%{{x}}: %{{y:.1f}}% of the dense layer removed<br>%{{customdata[1]:,}} of "
                    "%{customdata[0]:,} weights nonzero<br>prunable: %{customdata[2]}<extra></extra>"
                ),
            )
        )  # fmt: skip
    fig.update_layout(
        **{**LAYOUT, "legend": {"title": {"text": "model"}}}, title={"text": title}, height=460,
        xaxis={**_every_label(layer_order), "title": {"text": "layer (network order)"},
               "categoryorder": "array", "categoryarray": layer_order},
        yaxis={"title": {"text": "dense layer's weights removed (%)"}, "ticksuffix": "%", "range": [-2, 102]},
    )  # fmt: skip
    return fig


def occlusion_maps(
    panels: list[tuple[str, bytes | None, pl.DataFrame]], value: str, patch: int, title: str
) -> go.Figure:
    """Occlusion heat maps over their images, two panels a row: (title, PNG of the image as the model
    saw it, rows with row, col and `value`). A cell is the change in `value` when a patch x patch square
    with its top-left corner there is blanked out."""
    import io

    from PIL import Image
    from plotly.subplots import make_subplots

    if not panels or all(rows.is_empty() for _, _, rows in panels):
        return empty_figure("No occlusion rows for this sample")
    bound = max(float(rows[value].abs().max() or 0.0) for _, _, rows in panels if not rows.is_empty()) or 1.0
    unit = "°" if value == "d_angle_true" else ""
    fig = make_subplots(rows=(len(panels) + 1) // 2, cols=2, subplot_titles=[t for t, _, _ in panels],
                        horizontal_spacing=0.06, vertical_spacing=0.1)  # fmt: skip
    for k, (_, png, rows) in enumerate(panels):
        r, c = k // 2 + 1, k % 2 + 1
        if png is not None:
            fig.add_trace(go.Image(z=np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), hoverinfo="skip",
                                   hovertemplate="image<extra></extra>"), row=r, col=c)  # fmt: skip
        if rows.is_empty():
            continue
        cols, tops = sorted(set(rows["col"].to_list())), sorted(set(rows["row"].to_list()))
        grid = {(top, left): v for top, left, v in rows.select("row", "col", value).iter_rows()}
        fig.add_trace(
            go.Heatmap(
                x=[left + patch / 2 - 0.5 for left in cols], y=[top + patch / 2 - 0.5 for top in tops],
                z=[[grid.get((top, left)) for left in cols] for top in tops], colorscale="RdBu_r", zmid=0.0,
                zmin=-bound, zmax=bound, opacity=0.6, showscale=k == 0,
                colorbar={"ticksuffix": unit, "title": {
                    "text": "change of the angle<br>to the true class" if unit else "change of<br>‖f‖"}},
                hovertemplate=f"patch centre (%{{x}}, %{{y}})<br>change %{{z:+.2f}}{unit}<extra></extra>",
            ),
            row=r, col=c,
        )  # fmt: skip
    fig.update_xaxes(showticklabels=False, constrain="domain")
    # each panel's y axis keeps its own x axis's scale: one image pixel is square in every panel
    for k in range(len(panels)):
        fig.update_yaxes(showticklabels=False, autorange="reversed", scaleanchor="x" if k == 0 else f"x{k + 1}",
                         constrain="domain", row=k // 2 + 1, col=k % 2 + 1)  # fmt: skip
    fig.update_layout(**{**LAYOUT, "legend": {}}, title={"text": title}, height=330 * ((len(panels) + 1) // 2) + 80)
    return fig


def axis_ranges(frames: list[pl.DataFrame], columns: list[str]) -> dict[str, list[float]]:
    """Per column a range around the values of all frames (NaN and inf left out), so that plots
    of two models share their axes: [min, max] widened to whole steps of a tenth of the order
    of magnitude of its width (at most a fifth wider), for short labels; [0, 1] for a column
    with no finite value."""
    ranges = {}
    for column in columns:
        values = np.concatenate([f[column].cast(pl.Float64).fill_null(np.nan).to_numpy() for f in frames])
        values = values[np.isfinite(values)]
        if not len(values):
            ranges[column] = [0.0, 1.0]
            continue
        low, high = float(values.min()), float(values.max())
        if high > low:
            step = 10.0 ** (np.floor(np.log10(high - low)) - 1)
            low, high = np.floor(low / step) * step, np.ceil(high / step) * step
        ranges[column] = [float(low), float(high)]
    return ranges


GLOBAL_TITLES = {"feat_norm": "‖f‖", "geom_margin": "margin", "p_true": "p(true)"}


def parallel_geometry(
    rows: pl.DataFrame,
    class_names: list[str],
    label: int,
    colour: str,
    title: str,
    ranges: dict[str, list[float]],
) -> go.Figure:
    """The paper's global geometry: one line per row through the angle to every class direction
    (the true class's axis marked), the feature length, the margin and p(true). `colour` is
    `correct` (right or wrong) or `sparsity` (a colour scale). Brushing an axis is plotly's own.
    Rows need finite values (queries.with_direction): parcoords cannot draw a gap."""
    figure = go.Figure(_parcoords(rows, class_names, label, colour, ranges))
    figure.update_layout(**{**LAYOUT, "margin": {"l": 50, "r": 40, "t": 100, "b": 30}}, title=title, height=440)
    return figure


def _parcoords(
    rows: pl.DataFrame, class_names: list[str], label: int, colour: str, ranges: dict[str, list[float]]
) -> go.Parcoords:
    columns = [f"angle_{c}" for c in range(len(class_names))] + list(GLOBAL_TITLES)
    if colour == "correct":  # the wrong ones drawn last, on top
        rows = rows.sort("correct", descending=True, maintain_order=True)
    dimensions = []
    for column in columns:
        if column.startswith("angle_"):
            c = int(column.removeprefix("angle_"))
            name = f"∠ {class_names[c]}" + (" (true)" if c == label else "")
        else:
            name = GLOBAL_TITLES[column]
        dimensions.append(
            {"label": name, "values": rows[column].cast(pl.Float64).to_list(), "range": ranges[column],
             "tickformat": ".3~g"}
        )  # fmt: skip
    if colour == "correct":
        line = {
            "color": rows["correct"].cast(pl.Int8).to_list(),
            "colorscale": [[0, "#D55E00"], [0.5, "#D55E00"], [0.5, "#0F766E"], [1, "#0F766E"]],
            "cmin": 0, "cmax": 1, "showscale": True,
            "colorbar": {"title": {"text": "clean"}, "tickvals": [0, 1], "ticktext": ["wrong", "right"]},
        }  # fmt: skip
    else:
        line = {
            "color": rows["sparsity"].to_list(), "colorscale": "Viridis", "cmin": 0, "cmax": 1, "showscale": True,
            "colorbar": {"title": {"text": "sparsity"}, "tickformat": ".0%"},
        }  # fmt: skip
    return go.Parcoords(dimensions=dimensions, line=line)
