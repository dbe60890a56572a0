"""Aggregations behind the app's views: pure functions of polars frames, no Streamlit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from compute import schema
from compute.answers import Answers
from dashboard import roles
from dashboard.store import Snapshot, class_angles, scan_metrics
from dashboard.store import answers as snapshot_answers
from dashboard.store import sample_blocks as store_sample_blocks

METHOD_ORDER = list(schema.METHOD_FAMILIES)
BATCH_CELLS = 20_000_000  # per-sample answers a batched query unpacks at once (one byte each: about 20 MB)
SIMILARITY_CELLS = 4_000_000  # predictions (rows x models) behind the agreement matrices
GEOMETRY_POINTS = 300_000  # per-sample values behind one distribution or polar plot
GLOBAL_LINES = 1_000  # samples of one class drawn as lines of a parallel-coordinates plot, per model
#: the axes of the global geometry view after the angles to the class directions
GLOBAL_AXES = ("feat_norm", "geom_margin", "p_true")


def method_rank(method: str) -> int:
    """Known methods in docs/DESIGN.md order, unknown ones after them."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def clean_condition_ids(conditions: pl.DataFrame) -> list[int]:
    """The id of the clean condition (a list, as filters take it; one id in a valid snapshot)."""
    return conditions.filter(pl.col("corruption") == schema.CLEAN)["condition_id"].to_list()


def condition_label(corruption: str, severity: int) -> str:
    return "clean" if corruption == schema.CLEAN else f"{corruption} · {severity}"


def benchmark_condition_ids(conditions: pl.DataFrame) -> list[int]:
    """The conditions of the 15 CIFAR-10-C corruptions: what mean corruption accuracy averages."""
    return conditions.filter(pl.col("corruption").is_in(schema.BENCHMARK_CORRUPTIONS))["condition_id"].to_list()


def benchmark_conditions_text(conditions: pl.DataFrame) -> str:
    """Which conditions a mean over corruptions averages, for a page's label: e.g. `the 15
    conditions of 3 CIFAR-10-C corruptions (severities 1–5; the extras not counted)`."""
    chosen = conditions.filter(pl.col("corruption").is_in(schema.BENCHMARK_CORRUPTIONS))
    if chosen.is_empty():
        return "no condition of the 15 CIFAR-10-C corruptions (the extras do not count)"
    corruptions = chosen["corruption"].n_unique()
    severities = sorted(set(chosen["severity"].to_list()))
    if len(severities) > 2 and severities == list(range(severities[0], severities[-1] + 1)):
        levels = f"severities {severities[0]}–{severities[-1]}"
    else:
        levels = ("severity " if len(severities) == 1 else "severities ") + ", ".join(map(str, severities))
    of = "the 15" if corruptions == len(schema.BENCHMARK_CORRUPTIONS) else f"{corruptions} of the 15"
    extras = set(conditions["corruption"]) - set(schema.BENCHMARK_CORRUPTIONS) - {schema.CLEAN}
    left_out = "; the extras selected are not counted" if extras else ""
    return f"the {chosen.height} conditions of {of} CIFAR-10-C corruptions ({levels}{left_out})"


def mean_corruption_accuracy(summary: pl.DataFrame, conditions: pl.DataFrame) -> pl.DataFrame:
    """model_id -> plain mean of accuracy over the benchmark conditions among `conditions`
    (docs/DESIGN.md): the one definition every page's mean over corruptions uses."""
    ids = benchmark_condition_ids(conditions)
    counted = (
        summary.filter(pl.col("condition_id").is_in(ids))
        .group_by("model_id")
        .agg(pl.len().alias("corruption_conditions"))
    )
    return accuracy_on(summary, ids).rename({"accuracy": "mean_corruption_accuracy"}).join(counted, on="model_id")


def family_accuracy(
    summary: pl.DataFrame, conditions: pl.DataFrame, relative: bool = False, models=None
) -> pl.DataFrame:
    """Per model and condition family (clean, noise, blur, weather, digital, extra): the mean
    accuracy over that family's conditions; with `relative`, minus the dense parent's."""
    table = (
        summary.join(conditions.select("condition_id", "family"), on="condition_id")
        .group_by("model_id", "family")
        .agg(pl.col("accuracy").cast(pl.Float64).mean())
    )
    if relative:
        if models is None:
            raise ValueError("relative family accuracy needs the models table (for each model's dense parent)")
        parents = models.select("model_id", "parent_id")
        parent_acc = table.rename({"model_id": "parent_id", "accuracy": "parent_accuracy"})
        table = (
            table.join(parents, on="model_id")
            .join(parent_acc, on=["parent_id", "family"], how="left")
            .with_columns((pl.col("accuracy") - pl.col("parent_accuracy")).alias("accuracy"))
            .select("model_id", "family", "accuracy")
        )
    order = {family: i for i, family in enumerate(schema.CONDITION_FAMILIES)}
    return (
        table.with_columns(pl.col("family").replace_strict(order, default=len(order)).alias("_order"))
        .sort("model_id", "_order")
        .drop("_order")
    )


def models_table(snapshot: Snapshot, conditions: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per model: size, clean and mean corruption accuracy (over `conditions`, by
    default all), both relative to its dense parent."""
    mca = mean_corruption_accuracy(snapshot.summary, snapshot.conditions if conditions is None else conditions)
    table = snapshot.models.join(mca, on="model_id", how="left").with_columns(pl.col("clean_accuracy").cast(pl.Float64))
    parents = table.select(
        pl.col("model_id").alias("parent_id"),
        pl.col("clean_accuracy").alias("parent_clean_accuracy"),
        pl.col("mean_corruption_accuracy").alias("parent_mean_corruption_accuracy"),
    )
    table = table.join(parents, on="parent_id", how="left").with_columns(
        (pl.col("clean_accuracy") - pl.col("parent_clean_accuracy")).alias("clean_vs_dense"),
        (pl.col("mean_corruption_accuracy") - pl.col("parent_mean_corruption_accuracy")).alias("relative_robustness"),
        pl.col("method").map_elements(method_rank, return_dtype=pl.Int64).alias("_rank"),
        roles.is_dense().alias("is_dense"),
    )
    return table.sort(~pl.col("is_dense"), "_rank", "method", "target_sparsity", "seed", "model_id").drop(
        "_rank", "parent_clean_accuracy", "parent_mean_corruption_accuracy"
    )


def snapshot_facts(snapshot: Snapshot) -> dict[str, str]:
    """Short facts for the header of the overview page."""
    manifest = snapshot.manifest
    dataset = manifest.get("dataset", {})
    corrupted = snapshot.conditions.filter(pl.col("corruption") != schema.CLEAN)
    methods = sorted(set(snapshot.models["method"]), key=method_rank)
    counts = manifest.get("counts", {})
    rows = counts.get("metric_rows", len(snapshot.models) * len(snapshot.conditions) * len(snapshot.samples))
    shape = dataset.get("image_shape", [])
    severities = ", ".join(map(str, sorted(set(corrupted["severity"]))))
    timings = manifest.get("timings", {})
    return {
        "Data set": f"{dataset.get('name', '?')} ({len(snapshot.samples):,} test images, {'x'.join(map(str, shape))})",
        "Architecture": str(manifest.get("architecture", "?")),
        "Models": f"{len(snapshot.models)} ({len(methods)} methods, {len(manifest.get('seeds', [0]))} seed(s))",
        "Methods": ", ".join(methods),
        "Corruptions": f"{corrupted['corruption'].n_unique()} x severities {severities}",
        "Per-sample rows": f"{rows:,}",
        "Computed": f"{manifest.get('created', '?')} on {manifest.get('device', '?')}",
        "Compute time": f"{timings.get('total', 0):.0f} s",
    }


# --- similarity of models and corruptions ------------------------------------------------


def agreement_and_kappa(preds: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise prediction agreement and Cohen's kappa between the columns of `preds`
    (rows: condition x sample, columns: models).

    agreement = P(a == b); kappa = (agreement - p_e) / (1 - p_e), with p_e the agreement
    expected by chance from each model's own class frequencies. Kappa is 1 when p_e is 1
    and both models always predict that one class.
    """
    rows, n_models = preds.shape
    same = np.zeros((n_models, n_models))
    freq = np.zeros((n_models, n_classes))
    for k in range(n_classes):  # one class at a time: memory rows x models, not x classes
        hits = (preds == k).astype(np.float32)
        same += hits.T @ hits  # float32 counts are exact integers below 2^24 rows
        freq[:, k] = hits.sum(axis=0)
    agreement = same / rows
    freq /= rows
    expected = freq @ freq.T
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(expected < 1.0, (agreement - expected) / (1.0 - expected), 1.0)
    return agreement, kappa


def cluster_order(distance: np.ndarray) -> list[int]:
    """Leaf order of average-linkage hierarchical clustering (UPGMA) of a symmetric distance
    matrix, as scipy.cluster.hierarchy.leaves_list(linkage(..., "average")) gives it: at each
    merge the cluster formed earlier (or the smaller leaf) goes left. Numpy only, so the app
    needs no scipy; fine for the tens of items a matrix view shows."""
    n = len(distance)
    if n <= 1:
        return list(range(n))
    dist = distance.astype(np.float64).copy()
    np.fill_diagonal(dist, np.inf)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}  # cluster id -> leaves in order
    active = list(range(n))
    size = {i: 1 for i in range(n)}
    index = {i: i for i in range(n)}  # cluster id -> row of `dist`
    next_id = n
    while len(active) > 1:
        rows = [index[c] for c in active]
        sub = dist[np.ix_(rows, rows)]
        i, j = np.unravel_index(np.argmin(sub), sub.shape)
        a, b = sorted((active[i], active[j]))
        ra, rb = index[a], index[b]
        merged = (dist[ra] * size[a] + dist[rb] * size[b]) / (size[a] + size[b])
        dist[ra], dist[:, ra] = merged, merged
        dist[ra, ra] = np.inf
        dist[rb, :], dist[:, rb] = np.inf, np.inf
        members[next_id] = members.pop(a) + members.pop(b)
        size[next_id] = size[a] + size[b]
        index[next_id] = ra
        active = [c for c in active if c not in (a, b)] + [next_id]
        next_id += 1
    return members[active[0]]


def colour_floor(matrix: np.ndarray, step: float = 0.1) -> float:
    """Where a correlation matrix's colour scale starts: its smallest off-diagonal value, down to a
    whole `step`, so that the colours spend their range on the correlations present."""
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    off = off[np.isfinite(off)]
    if off.size == 0:
        return -1.0
    return max(-1.0, float(np.floor(off.min() / step + 1e-9) * step))


def correlation_distance(matrix: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation between rows; rows without variance (or vectors of a single
    value) are at distance 1 from everything else."""
    if matrix.shape[1] < 2:
        return 1.0 - np.eye(len(matrix))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(matrix)
    corr = np.nan_to_num(corr, nan=0.0)
    np.fill_diagonal(corr, 1.0)
    return 1.0 - corr


# --- fragile samples ----------------------------------------------------------------------


def modal_classes(preds: pl.DataFrame, by: str = "sample_id") -> pl.DataFrame:
    """Per sample, the set of most common predictions (ties kept) as a sorted list."""
    counts = preds.group_by(by, "pred").agg(pl.len().alias("votes"))
    best = counts.group_by(by).agg(pl.col("votes").max().alias("top"))
    return (
        counts.join(best, on=by)
        .filter(pl.col("votes") == pl.col("top"))
        .group_by(by)
        .agg(pl.col("pred").sort().alias("modal"), pl.col("top").first().alias("votes"))
    )


def pruning_identified_exemplars(clean_preds: pl.DataFrame, dense_ids, pruned_ids) -> pl.DataFrame:
    """Hooker et al.'s PIEs on clean images: a sample whose modal prediction among the pruned
    models differs from its modal prediction among the dense models.

    With ties the modal prediction is a set; a sample is a PIE only when the two sets share
    no class (a tie that includes the dense answer is not counted as a disagreement).
    Columns: sample_id, dense_modal, pruned_modal (lists), pruned_share (fraction of pruned
    models that give a dense modal class), is_pie.
    """
    dense = modal_classes(clean_preds.filter(pl.col("model_id").is_in(list(dense_ids))))
    pruned = modal_classes(clean_preds.filter(pl.col("model_id").is_in(list(pruned_ids))))
    joined = dense.select("sample_id", pl.col("modal").alias("dense_modal")).join(
        pruned.select("sample_id", pl.col("modal").alias("pruned_modal")), on="sample_id"
    )
    share = (
        clean_preds.filter(pl.col("model_id").is_in(list(pruned_ids)))
        .join(joined.select("sample_id", "dense_modal"), on="sample_id")
        .group_by("sample_id")
        .agg(pl.col("pred").is_in(pl.col("dense_modal").first()).mean().alias("pruned_share"))
    )
    return (
        joined.join(share, on="sample_id")
        .with_columns(
            (pl.col("dense_modal").list.set_intersection(pl.col("pruned_modal")).list.len() == 0).alias("is_pie")
        )
        .sort("sample_id")
    )


def model_batches(model_ids: list[str], cells_per_model: int) -> list[list[str]]:
    """`model_ids` in consecutive batches of about BATCH_CELLS unpacked answers each."""
    size = max(1, BATCH_CELLS // max(1, cells_per_model))
    return [model_ids[i : i + size] for i in range(0, len(model_ids), size)]


def pruning_fragility(
    answers: Answers, models: pl.DataFrame, model_ids: Sequence[str], condition_ids: Sequence[int]
) -> pl.DataFrame:
    """Per sample: over every pruned model of `model_ids` x condition of `condition_ids`, how
    often the dense parent is right and the pruned model wrong (`fragile`), out of how many
    pairs the parent is right (`chances`) and how many pairs there are (`pairs`)."""
    pruned = models.filter(pl.col("model_id").is_in(list(model_ids)) & ~roles.is_dense())
    conditions = [int(c) for c in condition_ids]
    n = len(answers.sample_ids)
    fragile, chances = np.zeros(n, np.int64), np.zeros(n, np.int64)
    ids, parents = pruned["model_id"].to_list(), pruned["parent_id"].to_list()
    for batch in model_batches(list(range(len(ids))), 2 * len(conditions) * n):
        mine = answers.correct([ids[i] for i in batch], conditions)
        theirs = answers.correct([parents[i] for i in batch], conditions)
        fragile += (theirs & ~mine).sum(axis=(0, 1))
        chances += theirs.sum(axis=(0, 1))
    table = pl.DataFrame(
        {"sample_id": answers.sample_ids, "fragile": fragile, "chances": chances},
        schema={"sample_id": pl.Int32, "fragile": pl.Int64, "chances": pl.Int64},
    ).with_columns(pl.lit(len(ids) * len(conditions), dtype=pl.Int64).alias("pairs"))
    if not ids or not conditions:
        table = table.clear()
    return table.with_columns(
        (pl.col("fragile") / pl.col("chances")).fill_nan(0.0).fill_null(0.0).alias("fragile_rate")
    ).sort("fragile", "fragile_rate", "sample_id", descending=[True, True, False])


def corruption_fragility(
    answers: Answers, conditions: pl.DataFrame, model_ids: Sequence[str], condition_ids: Sequence[int]
) -> pl.DataFrame:
    """Per sample, over every model of `model_ids` x corruption of `condition_ids` where the
    model is right on the clean image (every clean condition): how many pairs break (`broken`,
    wrong at some chosen severity) out of how many (`pairs`); the lowest and the mean breaking
    severity, a pair's being the lowest chosen severity at which the model is wrong; and the
    corruption that breaks it first: at its lowest breaking severity, the one that breaks it
    for the most models, among equals the first in the benchmark's order. Samples without a
    pair are left out."""
    clean = clean_condition_ids(conditions)
    chosen = conditions.filter(
        pl.col("condition_id").is_in([int(c) for c in condition_ids]) & (pl.col("corruption") != schema.CLEAN)
    ).sort("condition_id")
    names = chosen["corruption"].unique(maintain_order=True).to_list()
    severities = np.sort(chosen["severity"].unique().to_numpy())
    per_corruption = [chosen.filter(pl.col("corruption") == name).sort("severity") for name in names]
    n = len(answers.sample_ids)
    broken, pairs, severity_sum = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    lowest = np.full(n, np.iinfo(np.int64).max)
    counts = np.zeros((n, len(names), len(severities)), np.int64)  # models breaking there first
    for batch in model_batches(list(model_ids), (len(clean) + chosen.height) * n):
        clean_right = answers.correct(batch, clean).all(axis=1)  # model, sample
        for k, rows in enumerate(per_corruption):
            wrong = ~answers.correct(batch, rows["condition_id"].to_list())  # model, severity, sample
            breaks = clean_right & wrong.any(axis=1)
            severity = rows["severity"].to_numpy()[wrong.argmax(axis=1)]
            broken += breaks.sum(axis=0)
            pairs += clean_right.sum(axis=0)
            severity_sum += np.where(breaks, severity, 0).sum(axis=0)
            lowest = np.minimum(lowest, np.where(breaks, severity, lowest.max()).min(axis=0))
            at = np.searchsorted(severities, severity)
            for j in range(len(severities)):
                counts[:, k, j] += (breaks & (at == j)).sum(axis=0)
    first_severity = (counts.sum(axis=1) > 0).argmax(axis=1)
    first = counts[np.arange(n), :, first_severity].argmax(axis=1) if names else np.zeros(n, np.int64)
    return (
        pl.DataFrame(
            {
                "sample_id": answers.sample_ids,
                "broken": broken,
                "pairs": pairs,
                "lowest_severity": np.where(broken > 0, lowest, 0),
                "first_to_break": np.asarray(names or [""], dtype=object)[first],
                "severity_sum": severity_sum,
            },
            schema_overrides={"sample_id": pl.Int32, "first_to_break": pl.String},
        )
        .filter(pl.col("pairs") > 0)
        .with_columns(
            pl.when(pl.col("broken") > 0).then(pl.col(c)).alias(c) for c in ("lowest_severity", "first_to_break")
        )
        .with_columns(
            pl.when(pl.col("broken") > 0).then(pl.col("severity_sum") / pl.col("broken")).alias("mean_severity"),
            (pl.col("broken") / pl.col("pairs")).alias("broken_rate"),
        )
        .drop("severity_sum")
        .sort("broken", "sample_id", descending=[True, False])
    )


# --- method comparison and corruption breakdown (summary.parquet only) ---------------------

X_AXES = {
    "sparsity": "sparsity of the prunable weights (%)",
    "params_nonzero": "nonzero parameters",
    "flops": "multiply-adds per image",
}


def accuracy_on(summary: pl.DataFrame, condition_ids: list[int]) -> pl.DataFrame:
    """model_id -> mean accuracy over the given conditions."""
    return (
        summary.filter(pl.col("condition_id").is_in(condition_ids))
        .group_by("model_id")
        .agg(pl.col("accuracy").cast(pl.Float64).mean().alias("accuracy"))
    )


def telling_condition(summary: pl.DataFrame, model_ids: list[str], conditions: pl.DataFrame) -> int | None:
    """The corrupted condition a view should open on: where the models' accuracies differ most
    (population standard deviation), or for a single model where it loses most against clean
    images; ties go to the lower condition id. None without a corrupted condition."""
    corrupted = conditions.filter(pl.col("corruption") != schema.CLEAN)["condition_id"]
    rows = summary.filter(pl.col("model_id").is_in(list(model_ids)))
    if corrupted.is_empty() or rows.is_empty():
        return None
    clean = rows.filter(pl.col("condition_id").is_in(clean_condition_ids(conditions)))
    clean_accuracy = float(clean["accuracy"].mean()) if not clean.is_empty() else 1.0
    score = (
        rows.filter(pl.col("condition_id").is_in(corrupted.implode()))
        .group_by("condition_id")
        .agg(
            pl.col("accuracy").std(ddof=0).alias("spread"),
            (clean_accuracy - pl.col("accuracy").mean()).alias("loss"),
        )
        .sort("condition_id")
    )
    column = "spread" if rows["model_id"].n_unique() > 1 and score["spread"].max() > 0 else "loss"
    return int(score.sort(column, "condition_id", descending=[True, False])["condition_id"][0])


def comparison_table(models: pl.DataFrame, summary: pl.DataFrame, condition_ids: list[int]) -> pl.DataFrame:
    """Per model: accuracy over `condition_ids`, and that minus its dense parent's."""
    acc = accuracy_on(summary, condition_ids)
    table = models.join(acc, on="model_id", how="inner")
    parent = acc.rename({"model_id": "parent_id", "accuracy": "parent_accuracy"})
    return table.join(parent, on="parent_id", how="left").with_columns(
        (pl.col("accuracy") - pl.col("parent_accuracy")).alias("vs_dense")
    )


def in_method_order(table: pl.DataFrame) -> pl.DataFrame:
    """Rows by method (docs/DESIGN.md order), then target sparsity and seed where present."""
    keys = [c for c in ("target_sparsity", "seed", "model_id") if c in table.columns]
    return (
        table.with_columns(pl.col("method").map_elements(method_rank, return_dtype=pl.Int64).alias("_rank"))
        .sort("_rank", "method", *keys)
        .drop("_rank")
    )


def comparison_curves(table: pl.DataFrame, value: str, x: str) -> pl.DataFrame:
    """Mean, min and max over seeds of `value` per method and target sparsity, at the mean x."""
    return (
        table.group_by("method", "target_sparsity")
        .agg(
            pl.col("model_id").sort().str.join(", ").alias("models"),
            pl.col(x).cast(pl.Float64).mean().alias("x"),
            pl.col(value).mean().alias("mean"),
            pl.col(value).min().alias("min"),
            pl.col(value).max().alias("max"),
            pl.len().alias("seeds"),
        )
        .with_columns(pl.col("method").map_elements(method_rank, return_dtype=pl.Int64).alias("_rank"))
        .sort("_rank", "method", "target_sparsity")
        .drop("_rank")
    )


def corruption_matrix(
    summary: pl.DataFrame, conditions: pl.DataFrame, models: pl.DataFrame, relative: bool
) -> pl.DataFrame:
    """Per model and corruption: accuracy averaged over the conditions given (pass the
    severities you want in `conditions`), or its change against the dense parent."""
    corrupted = conditions.filter(pl.col("corruption") != schema.CLEAN).select("condition_id", "corruption")
    acc = (
        summary.join(corrupted, on="condition_id")
        .group_by("model_id", "corruption")
        .agg(pl.col("accuracy").cast(pl.Float64).mean())
    )
    if relative:
        parent = acc.rename({"model_id": "parent_id", "accuracy": "parent_accuracy"})
        acc = (
            acc.join(models.select("model_id", "parent_id"), on="model_id")
            .join(parent, on=["parent_id", "corruption"], how="left")
            .with_columns((pl.col("accuracy") - pl.col("parent_accuracy")).alias("accuracy"))
            .select("model_id", "corruption", "accuracy")
        )
    return acc.filter(pl.col("model_id").is_in(models["model_id"].implode()))


def severity_curves(summary: pl.DataFrame, conditions: pl.DataFrame, model_ids: list[str]) -> pl.DataFrame:
    """Accuracy of each model per corruption and severity, with the clean accuracy as severity 0."""
    rows = summary.filter(pl.col("model_id").is_in(model_ids)).join(
        conditions.select("condition_id", "corruption", "severity"), on="condition_id"
    )
    clean = rows.filter(pl.col("corruption") == schema.CLEAN).select("model_id", pl.col("accuracy").alias("clean"))
    corrupted = rows.filter(pl.col("corruption") != schema.CLEAN)
    starts = (
        corrupted.select("model_id", "corruption")
        .unique()
        .join(clean, on="model_id")
        .select("model_id", "corruption", pl.lit(0, dtype=pl.Int8).alias("severity"), pl.col("clean").alias("accuracy"))
    )
    return pl.concat(
        [starts, corrupted.select("model_id", "corruption", pl.col("severity").cast(pl.Int8), "accuracy")],
        how="vertical_relaxed",
    ).sort("model_id", "corruption", "severity")


def corruption_profiles(
    summary: pl.DataFrame, conditions: pl.DataFrame, model_ids: list[str]
) -> tuple[list[str], np.ndarray]:
    """Corruptions and, per corruption, its accuracy on each model (mean over the given
    severities): the profiles whose correlation says which corruptions test the same thing."""
    table = (
        summary.filter(pl.col("model_id").is_in(model_ids))
        .join(conditions.filter(pl.col("corruption") != schema.CLEAN), on="condition_id")
        .group_by("corruption", "model_id")
        .agg(pl.col("accuracy").cast(pl.Float64).mean())
        .pivot(on="model_id", index="corruption", values="accuracy")
    )
    order = [c for c in schema.CORRUPTION_FAMILIES if c in table["corruption"].unique().to_list()]
    table = table.with_columns(pl.col("corruption").cast(pl.Enum(order))).sort("corruption")
    return order, table.select(sorted(c for c in table.columns if c != "corruption")).to_numpy()


# --- per-sample scans (lazy: filters and columns pushed down to the Parquet reader) ---------


def evenly_spaced(values: list[int], count: int) -> list[int]:
    """At most `count` (at least one) of `values`, evenly spaced, the first and last kept."""
    if len(values) <= count:
        return list(values)
    return [values[i] for i in np.linspace(0, len(values) - 1, max(1, count)).astype(int)]


def sample_subset(snapshot: Snapshot, count: int, among: list[int] | None = None) -> list[int]:
    """At most `count` (at least one) of the snapshot's samples (or of `among`, sorted), evenly
    spaced and drawn from as few metrics/ blocks as that takes, lowest first (each block is
    itself an evenly spaced subset), so that reading them skips the other blocks' row groups."""
    ordered = snapshot.samples["sample_id"].sort().to_numpy()
    candidates = np.asarray(ordered if among is None else among, dtype=np.int64)
    blocks = store_sample_blocks(snapshot)
    if blocks is None or len(candidates) <= count:
        return evenly_spaced(candidates.tolist(), count)
    block = np.searchsorted(ordered, candidates) % blocks
    holding = np.flatnonzero(np.bincount(block, minlength=blocks))  # blocks with candidates, lowest first
    enough = int(np.searchsorted(np.cumsum(np.bincount(block)[holding]), max(1, count))) + 1
    return evenly_spaced(candidates[np.isin(block, holding[:enough])].tolist(), count)


def positions(values: pl.Series, ordered: list) -> np.ndarray:
    """Index of each value in `ordered`, which holds every value: integers or strings, in any
    order (non-negative ids by a lookup table, other integers by binary search in sorted order)."""
    if values.dtype == pl.String:
        return values.cast(pl.Enum(ordered)).to_physical().to_numpy().astype(np.int64)
    ordered = np.asarray(ordered, dtype=np.int64)
    if len(ordered) and ordered.min() >= 0:  # ids: a lookup table, one step per value instead of a binary search
        lookup = np.zeros(int(ordered.max()) + 1, np.int64)
        lookup[ordered] = np.arange(len(ordered))
        return lookup[values.to_numpy()]
    return np.searchsorted(ordered, values.to_numpy()).astype(np.int64)


def prediction_matrix(
    snapshot: Snapshot, model_ids: list[str], condition_ids: list[int], max_cells: int = SIMILARITY_CELLS
) -> np.ndarray:
    """Predictions as rows (condition x sample) by columns (models, in `model_ids` order),
    without rows some model lacks.

    Beyond `max_cells` predictions, only an evenly spaced subset of samples is read, so the
    similarity views stay interactive on snapshots with tens of millions of rows.
    """
    conditions = sorted(int(c) for c in condition_ids)
    per_sample = max(1, len(model_ids) * len(conditions))
    samples = sample_subset(snapshot, max_cells // per_sample)
    frame = scan_metrics(snapshot, model_ids, conditions, ["pred"], samples).collect()
    matrix = np.full((len(conditions) * len(samples), len(model_ids)), -1, dtype=np.int64)
    row = positions(frame["condition_id"], conditions) * len(samples) + positions(frame["sample_id"], samples)
    matrix[row, positions(frame["model_id"], model_ids)] = frame["pred"].to_numpy()
    return matrix[(matrix >= 0).all(axis=1)]


def corruption_correlation(
    answers: Answers, conditions: pl.DataFrame, model_ids: list[str]
) -> tuple[list[str], np.ndarray]:
    """Pearson correlation between corruptions of per-sample correctness: per corruption, a
    vector over (model, sample) of correctness averaged over the given severities; correlated
    corruptions trip up the same samples. Accumulated a batch of models at a time (sums,
    squares and cross products), so memory stays bounded however many models there are; a
    corruption without variance correlates 0 with the others, as in `correlation_distance`."""
    corrupted = conditions.filter(pl.col("corruption") != schema.CLEAN)
    names = [c for c in schema.CORRUPTION_FAMILIES if c in corrupted["corruption"].unique().to_list()]
    per_corruption = [corrupted.filter(pl.col("corruption") == name)["condition_id"].to_list() for name in names]
    n = len(answers.sample_ids)
    count, sums, products = 0, np.zeros(len(names)), np.zeros((len(names), len(names)))
    for batch in model_batches(list(model_ids), corrupted.height * n):
        x = np.stack([answers.correct(batch, ids).mean(axis=1).ravel() for ids in per_corruption]) if names else None
        if x is None:
            break
        count += x.shape[1]
        sums += x.sum(axis=1)
        products += x @ x.T
    if count < 2:
        return names, np.eye(len(names))
    mean = sums / count
    covariance = products / count - np.outer(mean, mean)
    spread = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.clip(covariance / np.outer(spread, spread), -1.0, 1.0)
    corr[~np.isfinite(corr) | (np.outer(spread, spread) < 1e-12)] = 0.0
    np.fill_diagonal(corr, 1.0)
    return names, corr


def metric_rows(
    snapshot: Snapshot, model_ids: list[str], condition_ids: list[int], columns: list[str], max_rows: int
) -> pl.DataFrame:
    """Per-sample values of `columns` for the chosen models and conditions (at most
    `max_rows`: an evenly spaced subset of samples beyond that, chosen before reading)."""
    per_sample = max(1, len(model_ids) * len(condition_ids))
    samples = sample_subset(snapshot, max_rows // per_sample)
    return scan_metrics(snapshot, model_ids, condition_ids, columns, samples).collect()


def shift_from_dense(metrics: pl.LazyFrame, model_id: str, parent_id: str, condition_id: int) -> pl.DataFrame:
    """Per sample, how pruning moved it in feature space on one condition: the change of
    feature length and of angle to the true class, with both models' correctness."""
    columns = ["sample_id", "feat_norm", "angle_true", "geom_margin", "correct"]
    base = metrics.filter(pl.col("condition_id") == condition_id)
    pruned = base.filter(pl.col("model_id") == model_id).select(columns)
    dense = base.filter(pl.col("model_id") == parent_id).select(columns)
    return (
        pruned.join(dense, on="sample_id", suffix="_dense")
        .with_columns(
            (pl.col("feat_norm") - pl.col("feat_norm_dense")).alias("d_length"),
            (pl.col("angle_true") - pl.col("angle_true_dense")).alias("d_angle"),
            (pl.col("geom_margin") - pl.col("geom_margin_dense")).alias("d_margin"),
            pl.when(pl.col("correct_dense") & ~pl.col("correct"))
            .then(pl.lit("broken by pruning"))
            .when(~pl.col("correct_dense") & pl.col("correct"))
            .then(pl.lit("fixed by pruning"))
            .when(pl.col("correct"))
            .then(pl.lit("right in both"))
            .otherwise(pl.lit("wrong in both"))
            .alias("outcome"),
        )
        .sort("sample_id")
        .collect()
    )


# --- snapshot-level views (pages call these through store.cached) -------------------------


def model_similarity(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]):
    """Agreement and Cohen's kappa between models' predictions, and a clustered order."""
    preds = prediction_matrix(snapshot, list(model_ids), list(condition_ids))
    n_classes = max(len(snapshot.class_names), int(preds.max(initial=0)) + 1)
    agreement, kappa = agreement_and_kappa(preds, n_classes)
    return agreement, kappa, cluster_order(1.0 - agreement), preds.shape[0]


def corruption_similarity(
    snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...], per_sample: bool
):
    """Correlation between corruptions (per-model accuracy profiles, or per-sample
    correctness), and a clustered order of the corruptions."""
    conditions = snapshot.conditions.filter(pl.col("condition_id").is_in(list(condition_ids)))
    if per_sample:
        names, corr = corruption_correlation(snapshot_answers(snapshot), conditions, list(model_ids))
        distance = 1.0 - corr
    else:
        names, matrix = corruption_profiles(snapshot.summary, conditions, list(model_ids))
        distance = correlation_distance(matrix) if len(names) >= 2 else None
    if len(names) < 2:
        return names, np.ones((len(names), len(names))), list(range(len(names)))
    return names, 1.0 - distance, cluster_order(distance)


#: changes relative to the dense parent: shares of 1 in the data, percentage points on the page
POINT_COLUMNS = ("relative_robustness", "vs_dense", "clean_vs_dense")


def in_points(table: pl.DataFrame) -> pl.DataFrame:
    """The table as a page shows it: each change relative to dense in percentage points, its name
    ending in _pts so that a download says which unit it holds."""
    present = [c for c in POINT_COLUMNS if c in table.columns]
    return table.with_columns((100 * pl.col(c)).alias(c) for c in present).rename({c: f"{c}_pts" for c in present})


#: how the fragile-sample tables can be ordered
RANKINGS = {"rate": "share of the chances that break", "count": "number of pairs that break"}


def ranked(table: pl.DataFrame, count: str, rate: str, by: str = "rate") -> pl.DataFrame:
    """Most fragile first, by `rate` or by `count`; the other breaks ties, then the sample id."""
    first, second = (rate, count) if by == "rate" else (count, rate)
    return table.sort(first, second, "sample_id", descending=[True, True, False], nulls_last=True)


def with_samples(snapshot: Snapshot, table: pl.DataFrame) -> pl.DataFrame:
    """Label and class name beside each sample_id."""
    return table.join(snapshot.samples, on="sample_id", how="left")


def pruning_fragile_samples(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]):
    table = pruning_fragility(snapshot_answers(snapshot), snapshot.models, model_ids, condition_ids)
    return with_samples(snapshot, table)


def corruption_fragile_samples(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]):
    table = corruption_fragility(snapshot_answers(snapshot), snapshot.conditions, model_ids, condition_ids)
    return with_samples(snapshot, table)


def exemplars(snapshot: Snapshot, pruned_ids: tuple[str, ...]):
    """PIEs on clean images: every dense model of the snapshot against the chosen pruned ones."""
    dense_ids = roles.dense_ids(snapshot.models)
    given = snapshot_answers(snapshot)
    ids = dense_ids + list(pruned_ids)
    pred = given.clean_predictions(ids)  # model, clean condition, sample
    preds = pl.DataFrame(
        {
            "model_id": np.repeat(ids, pred.shape[1] * pred.shape[2]),
            "sample_id": np.tile(given.sample_ids, len(ids) * pred.shape[1]),
            "pred": pred.ravel(),
        }
    )
    table = pruning_identified_exemplars(preds, dense_ids, list(pruned_ids))
    return with_samples(snapshot, table).sort("is_pie", "pruned_share", "sample_id", descending=[True, False, False])


def robust_samples(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]):
    """Samples by their accuracy over every chosen model and condition, most robust first."""
    given = snapshot_answers(snapshot)
    conditions = [int(c) for c in condition_ids]
    right = np.zeros(len(given.sample_ids), np.int64)
    for batch in model_batches(list(model_ids), len(conditions) * len(given.sample_ids)):
        right += given.correct(batch, conditions).sum(axis=(0, 1))
    pairs = len(model_ids) * len(conditions)
    table = pl.DataFrame({"sample_id": given.sample_ids, "right": right}, schema_overrides={"sample_id": pl.Int32})
    table = table.select("sample_id", (pl.col("right") / pairs).alias("accuracy"), pl.lit(pairs).alias("pairs"))
    if not pairs:
        table = table.clear()
    return with_samples(snapshot, table.sort("accuracy", "sample_id", descending=[True, False]))


#: what Sample detail shows of a sample's rows: reading only these skips a third of the bytes of
#: its block, which on a first visit come from disk (1 s of the page at 190 M rows)
SAMPLE_COLUMNS = ("pred", "correct", "p_true", "loss", "feat_norm", "angle_true", "geom_margin")


def sample_outcomes(snapshot: Snapshot, sample_id: int, model_ids: tuple[str, ...]):
    """Every model x condition row of one sample (SAMPLE_COLUMNS), with the condition's name and severity."""
    rows = scan_metrics(snapshot, list(model_ids), columns=SAMPLE_COLUMNS, sample_ids=[int(sample_id)]).collect()
    return rows.join(snapshot.conditions, on="condition_id").sort("model_id", "condition_id")


def clean_outcomes(snapshot: Snapshot, model_id: str):
    """sample_id, pred, correct and the geometry of one model on clean images."""
    clean = clean_condition_ids(snapshot.conditions)
    return (
        scan_metrics(snapshot, model_ids=[model_id], condition_ids=clean)
        .select("sample_id", "pred", "correct", "p_true", "feat_norm", "angle_true", "geom_margin")
        .collect()
    )


def metric_sample(
    snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...], columns: tuple[str, ...]
):
    return with_samples(
        snapshot, metric_rows(snapshot, list(model_ids), list(condition_ids), list(columns), GEOMETRY_POINTS)
    )


def dense_shift(snapshot: Snapshot, model_id: str, condition_id: int):
    parent = snapshot.models.filter(pl.col("model_id") == model_id)["parent_id"][0]
    return with_samples(snapshot, shift_from_dense(scan_metrics(snapshot), model_id, parent, condition_id))


def aligned_to(points: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """`points` (sample_id, x, y) rotated or reflected onto `reference` by orthogonal Procrustes
    (scipy), after centring both, then moved to the reference's centre: two models' 2-D
    embeddings on common axes. Only samples both have are kept."""
    from scipy.linalg import orthogonal_procrustes

    both = points.join(reference.select("sample_id", pl.col("x").alias("rx"), pl.col("y").alias("ry")), on="sample_id")
    mine = both.select("x", "y").to_numpy().astype(float)
    theirs = both.select("rx", "ry").to_numpy().astype(float)
    rotation, _ = orthogonal_procrustes(mine - mine.mean(axis=0), theirs - theirs.mean(axis=0))
    moved = (mine - mine.mean(axis=0)) @ rotation + theirs.mean(axis=0)
    return both.select("sample_id").with_columns(pl.Series("x", moved[:, 0]), pl.Series("y", moved[:, 1]))


def removed_per_layer(layers: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    """layers.parquet with `removed`: the share of the dense parent's weights of the layer that the
    model no longer computes with, 1 - nonzero / parent's params (a filter that structured pruning
    dropped counts as removed; `sparsity` only counts zeros within the layer as it is)."""
    parents = layers.select(pl.col("model_id").alias("parent_id"), "layer", pl.col("params").alias("dense_params"))
    return (
        layers.join(models.select("model_id", "parent_id"), on="model_id", how="left")
        .with_columns(pl.coalesce("parent_id", "model_id").alias("parent_id"))
        .join(parents, on=["parent_id", "layer"], how="left")
        .with_columns((1 - pl.col("nonzero") / pl.col("dense_params")).alias("removed"))
        .drop("parent_id", "dense_params")
    )


def angle_column(index: int) -> str:
    return f"angle_{index}"


def global_geometry(snapshot: Snapshot, model_ids: tuple[str, ...], label: int, limit: int = GLOBAL_LINES):
    """Per model and sample of class `label` (an evenly spaced `limit` of them), on clean images:
    the angle to every class direction (`angle_<c>`), feat_norm, geom_margin, p_true and
    correct, the axes of the paper's global geometry view."""
    of_class = snapshot.samples.filter(pl.col("label") == label)["sample_id"].sort().to_list()
    sample_ids = sample_subset(snapshot, limit, of_class)
    clean = clean_condition_ids(snapshot.conditions)
    metrics = scan_metrics(snapshot, list(model_ids), clean, [*GLOBAL_AXES, "correct"], sample_ids)
    metrics = metrics.drop("condition_id").collect()
    angles = class_angles(snapshot, model_ids, sample_ids)
    n_classes = snapshot.classes["class"].n_unique()
    return (
        angles.select(
            "model_id", "sample_id", *[pl.col("angles").list.get(c).alias(angle_column(c)) for c in range(n_classes)]
        )
        .join(metrics, on=["model_id", "sample_id"])
        .sort("model_id", "sample_id")
    )


def global_geometry_means(rows: pl.DataFrame, models: pl.DataFrame) -> pl.DataFrame:
    """One row per model: the mean of every axis over its rows (NaN values left out), its
    accuracy on them, and its method and sparsity."""
    axes = [c for c in rows.columns if c.startswith("angle_")] + list(GLOBAL_AXES)
    means = rows.group_by("model_id").agg(
        pl.len().alias("samples"),
        pl.col("correct").mean().alias("accuracy"),
        *[pl.col(c).fill_nan(None).mean() for c in axes],
    )
    return models.select("model_id", "method", "sparsity").join(means, on="model_id").sort("sparsity", "model_id")


def with_direction(rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The rows whose every axis is finite, and how many were left out: a zero feature vector
    has no angle to any class, and a class row of zeros none to it."""
    axes = [c for c in rows.columns if c.startswith("angle_")] + list(GLOBAL_AXES)
    kept = rows.filter(pl.all_horizontal(pl.col(c).is_finite() for c in axes))
    return kept, rows.height - kept.height


def global_geometry_change(means: pl.DataFrame, dense_id: str, pruned_id: str, class_names: list[str]) -> pl.DataFrame:
    """One row per axis of the global geometry view (and accuracy): the dense parent's mean, the
    pruned model's and the change, from `global_geometry_means`."""
    axes = {angle_column(c): f"angle to {name}" for c, name in enumerate(class_names)}
    axes |= {"feat_norm": "feature length", "geom_margin": "geometric margin", "p_true": "p(true)"}
    axes["accuracy"] = "accuracy"
    dense, pruned = (means.filter(pl.col("model_id") == m).row(0, named=True) for m in (dense_id, pruned_id))
    return pl.DataFrame(
        {
            "axis": list(axes.values()),
            dense_id: [dense[c] for c in axes],
            pruned_id: [pruned[c] for c in axes],
            "change": [None if dense[c] is None or pruned[c] is None else pruned[c] - dense[c] for c in axes],
        },
        schema={"axis": pl.String, dense_id: pl.Float64, pruned_id: pl.Float64, "change": pl.Float64},
    )


def occlusion_panels(
    occluded: pl.DataFrame,
    conditions: pl.DataFrame,
    images: dict[int, bytes],
    condition_ids: list[int],
    models: list[str],
) -> list[tuple[str, bytes | None, pl.DataFrame]]:
    """The panels of a sample's occlusion figure, condition-major: per condition, per model (each
    once), its title `model · condition`, the image as the models saw it and its occlusion rows."""
    panels = []
    for cid in condition_ids:
        corruption, severity = conditions.filter(pl.col("condition_id") == cid).select("corruption", "severity").row(0)
        label = condition_label(corruption, severity)
        for model in dict.fromkeys(models):
            rows = occluded.filter((pl.col("model_id") == model) & (pl.col("condition_id") == cid))
            panels.append((f"{model} · {label}", images.get(cid), rows))
    return panels


def severity_curve_rows(rows: pl.DataFrame, metric: str) -> pl.DataFrame:
    """One model's rows of one sample (with corruption and severity) as curves per corruption over
    severity 0 (the clean value, repeated for every corruption) to 5."""
    start = rows.filter(pl.col("corruption") == schema.CLEAN)
    corrupted = rows.filter(pl.col("corruption") != schema.CLEAN)
    return pl.concat(
        [
            corrupted.select("model_id", "corruption", "severity", metric),
            corrupted.select("model_id", "corruption")
            .unique()
            .join(start.select("model_id", pl.lit(0, dtype=pl.Int8).alias("severity"), metric), on="model_id")
            .select("model_id", "corruption", "severity", metric),
        ],
        how="vertical_relaxed",
    ).sort("corruption", "severity")
