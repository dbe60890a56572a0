"""The model map (the paper's geometric similarity view): every model as the vector of its
per-sample geometry, placed in 2-D, with the minimum spanning tree of their distances.

Streamlit-free; projections and the tree come from scikit-learn and scipy.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dashboard.queries import sample_subset
from dashboard.store import Snapshot, scan_metrics

#: the per-sample geometry a model is described by (docs/DESIGN.md)
GEOMETRY = ("angle_true", "feat_norm", "geom_margin")
#: at most this many numbers per model (samples x conditions x metrics) are read
MAX_VALUES_PER_MODEL = 60_000


def projections() -> list[str]:
    """PCA and metric MDS always; UMAP where the umap-learn package is installed."""
    try:
        import umap  # noqa: F401
    except ImportError:
        return ["PCA", "MDS"]
    return ["PCA", "MDS", "UMAP"]


def model_vectors(
    snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...]
) -> tuple[list[str], np.ndarray, int]:
    """(model ids, one row per model of its geometry on every sample and condition, standardised per
    column, and how many samples were used: an evenly spaced subset when the snapshot is large)."""
    per_sample = len(condition_ids) * len(GEOMETRY)
    samples = sample_subset(snapshot, max(1, MAX_VALUES_PER_MODEL // max(per_sample, 1)))
    rows = scan_metrics(snapshot, list(model_ids), list(condition_ids), GEOMETRY, samples).collect()
    return (*standardised_matrix(rows, list(model_ids)), len(samples))


def standardised_matrix(rows: pl.DataFrame, model_ids: list[str]) -> tuple[list[str], np.ndarray]:
    """Models that have rows, and their vectors: one column per (condition, sample, metric), each
    column z-scored over the models (a constant column becomes 0; a missing value, 0 after)."""
    found = set(rows["model_id"].unique())  # once: a set of every row's id per model took 40 s at 20 M rows
    present = [m for m in model_ids if m in found]
    rows = rows.with_columns(pl.col("model_id").cast(pl.Enum(present)).to_physical().alias("_model"))
    rows = rows.sort("_model", "condition_id", "sample_id")
    keys = rows.select("condition_id", "sample_id").to_numpy()
    per_model = rows.height // len(present)
    same = rows.height % len(present) == 0 and (keys.reshape(len(present), -1, 2) == keys[:per_model]).all()
    if not same:  # models that lack some rows: line them up on the full grid, nulls where missing
        rows = _complete(rows.drop("_model"), present)
    # column by column (a frame's to_numpy interleaves rows slowly): entries ordered (condition, sample, metric)
    matrix = np.stack([rows[c].to_numpy().astype(float) for c in GEOMETRY], axis=1).reshape(len(present), -1)
    matrix = np.where(np.isfinite(matrix), matrix, np.nan)
    mean, std = np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (matrix - mean) / np.where(std > 0, std, np.nan)
    return present, np.nan_to_num(z, nan=0.0)


def _complete(rows: pl.DataFrame, present: list[str]) -> pl.DataFrame:
    """Every model x (condition, sample) of any model, null where a model has no row, in order
    (the fast path of standardised_matrix needs every model to have the same rows)."""
    grid = rows.select("condition_id", "sample_id").unique()
    full = pl.DataFrame({"model_id": present}).join(grid, how="cross")
    order = {m: i for i, m in enumerate(present)}
    return (
        full.join(rows, on=["model_id", "condition_id", "sample_id"], how="left")
        .with_columns(pl.col("model_id").replace_strict(order, return_dtype=pl.Int32).alias("_model"))
        .sort("_model", "condition_id", "sample_id")
    )


def project(matrix: np.ndarray, how: str) -> np.ndarray:
    """Models placed in 2-D: PCA, metric MDS on the Euclidean distances, or UMAP."""
    n = len(matrix)
    if n < 3:  # two points: the line between them
        return np.column_stack([np.arange(n, dtype=float), np.zeros(n)])
    if how == "MDS":
        from sklearn.manifold import MDS

        # metric MDS (SMACOF) on the distances, from a classical-MDS start for a reproducible map
        mds = MDS(n_components=2, metric_mds=True, metric="precomputed", init="classical_mds", random_state=0)
        return mds.fit_transform(pairwise_distances(matrix))
    if how == "UMAP":
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=0).fit_transform(matrix)
    from sklearn.decomposition import KernelPCA

    # PCA from the models' Gram matrix (a linear kernel): the same two components as PCA's SVD of
    # the centred vectors, in a fraction of the time when there are far more entries than models
    return KernelPCA(n_components=2, kernel="linear").fit_transform(matrix)


def pairwise_distances(matrix: np.ndarray) -> np.ndarray:
    from sklearn.metrics.pairwise import euclidean_distances

    return euclidean_distances(matrix)  # through the Gram matrix too: ||a||^2 + ||b||^2 - 2 a.b


def spanning_tree(matrix: np.ndarray) -> list[tuple[int, int]]:
    """The edges (i < j) of the minimum spanning tree of the models' Euclidean distances."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    distances = pairwise_distances(matrix)
    # scipy reads a zero as "no edge" (and a dense input drops tiny ones): identical models still get theirs
    distances[distances == 0] = 1e-9 * max(float(distances.max()), 1.0)
    np.fill_diagonal(distances, 0.0)
    tree = minimum_spanning_tree(csr_matrix(distances)).tocoo()
    return sorted((min(i, j), max(i, j)) for i, j in zip(tree.row.tolist(), tree.col.tolist(), strict=True))


def placed_models(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...], how: str):
    """(model ids, 2-D positions, spanning-tree edges, samples used): the whole map, so that a page
    caches it with store.cached instead of projecting again on every rerun."""
    ids, matrix, used = model_vectors(snapshot, model_ids, condition_ids)
    return ids, project(matrix, how), spanning_tree(matrix), used
