"""The model map (the paper's geometric similarity view): every model as the vector of its
per-sample geometry, placed in 2-D, with the minimum spanning tree of their distances.

Streamlit-free; the projections and the tree come from scipy (scikit-learn for MDS, umap-learn for UMAP).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from dashboard.queries import positions, sample_subset
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
    """Models that have rows, and their vectors: one column per (condition, sample, metric) that
    any model has a row for, each column z-scored over the models (a constant column becomes 0; a
    missing value, 0 after)."""
    found = set(rows["model_id"].unique())
    present = [m for m in model_ids if m in found]
    conditions = rows["condition_id"].unique().sort().to_list()
    samples = rows["sample_id"].unique().sort().to_list()
    # each row straight to its place by array indexing: sorting the millions of rows took seconds
    model = positions(rows["model_id"].cast(pl.String), present)
    cell = positions(rows["condition_id"], conditions) * len(samples) + positions(rows["sample_id"], samples)
    matrix = np.full((len(present), len(conditions) * len(samples), len(GEOMETRY)), np.nan)
    for k, column in enumerate(GEOMETRY):
        matrix[model, cell, k] = rows[column].to_numpy()
    held = np.zeros(matrix.shape[1], bool)
    held[cell] = True  # (condition, sample) pairs no model has are no entries of the vectors
    if not held.all():
        matrix = matrix[:, held]
    matrix = matrix.reshape(len(present), -1)  # entries ordered (condition, sample, metric)
    # in place from here: the matrix is the page's largest object (95 MB at 198 models)
    matrix[~np.isfinite(matrix)] = np.nan
    if np.isnan(matrix).any():
        mean, std = np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0)
    else:  # the usual case, in half the time of the NaN-aware versions
        mean, std = matrix.mean(axis=0), matrix.std(axis=0)
    matrix -= mean
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix /= np.where(std > 0, std, np.nan)
    return present, np.nan_to_num(matrix, nan=0.0, copy=False)


def project(matrix: np.ndarray, how: str, gram: np.ndarray | None = None) -> np.ndarray:
    """Models placed in 2-D: PCA, metric MDS on the Euclidean distances, or UMAP (`gram`, the
    matrix's centred_gram when the caller has it)."""
    gram = centred_gram(matrix) if gram is None and how in ("PCA", "MDS") else gram
    n = len(matrix)
    if n < 3:  # two points: the line between them
        return np.column_stack([np.arange(n, dtype=float), np.zeros(n)])
    if how == "MDS":
        from sklearn.manifold import MDS

        # metric MDS (SMACOF) on the distances, from a classical-MDS start for a reproducible map
        mds = MDS(n_components=2, metric_mds=True, metric="precomputed", init="classical_mds", random_state=0)
        return mds.fit_transform(gram_distances(gram))
    if how == "UMAP":
        import umap

        return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=0).fit_transform(matrix)
    return principal_components(gram)


def centred_gram(matrix: np.ndarray) -> np.ndarray:
    """The models' inner products after centring each entry: models x models, whatever the length
    of their vectors, so PCA and the distances cost little when entries far outnumber models."""
    centred = matrix - matrix.mean(axis=0)
    return centred @ centred.T


def principal_components(gram: np.ndarray) -> np.ndarray:
    """The first two principal component scores from the centred Gram matrix: its top eigenvectors
    scaled by the square roots of their eigenvalues (the same scores as PCA by SVD of the centred
    vectors), each axis signed so that its largest entry is positive and a map does not flip."""
    from scipy.linalg import eigh

    n = len(gram)
    values, vectors = eigh(gram, subset_by_index=[n - 2, n - 1])  # ascending
    scores = vectors[:, ::-1] * np.sqrt(np.clip(values[::-1], 0.0, None))
    signs = np.sign(scores[np.argmax(np.abs(scores), axis=0), [0, 1]])
    return scores * np.where(signs == 0, 1.0, signs)


def pairwise_distances(matrix: np.ndarray) -> np.ndarray:
    """Euclidean distances between the models (rows of `matrix`)."""
    return gram_distances(centred_gram(matrix))


def gram_distances(gram: np.ndarray) -> np.ndarray:
    """Euclidean distances from a Gram matrix: ||a||^2 + ||b||^2 - 2 a.b."""
    squared = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2.0 * gram
    distances = np.sqrt(np.clip(squared, 0.0, None))
    np.fill_diagonal(distances, 0.0)
    return distances


def spanning_tree(distances: np.ndarray) -> list[tuple[int, int]]:
    """The edges (i < j) of the minimum spanning tree of the models' distances."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    distances = distances.copy()
    # scipy reads a zero as "no edge" (and a dense input drops tiny ones): identical models still get theirs
    distances[distances == 0] = 1e-9 * max(float(distances.max()), 1.0)
    np.fill_diagonal(distances, 0.0)
    tree = minimum_spanning_tree(csr_matrix(distances)).tocoo()
    return sorted((min(i, j), max(i, j)) for i, j in zip(tree.row.tolist(), tree.col.tolist(), strict=True))


def placed_models(snapshot: Snapshot, model_ids: tuple[str, ...], condition_ids: tuple[int, ...], how: str):
    """(model ids, 2-D positions, spanning-tree edges, samples used): the whole map, so that a page
    caches it with store.cached instead of projecting again on every rerun."""
    ids, matrix, used = model_vectors(snapshot, model_ids, condition_ids)
    gram = centred_gram(matrix)  # once, for the projection and the tree
    return ids, project(matrix, how, gram), spanning_tree(gram_distances(gram)), used
