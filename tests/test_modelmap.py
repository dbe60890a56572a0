"""The model map's vectors against a hand-worked standardisation, complete or not."""

import numpy as np
import polars as pl

from dashboard import modelmap


def rows(model_ids, samples, angle, norm, margin):
    return pl.DataFrame(
        {
            "model_id": model_ids,
            "condition_id": [0] * len(model_ids),
            "sample_id": samples,
            "angle_true": angle,
            "feat_norm": norm,
            "geom_margin": margin,
        }
    )


def test_each_entry_is_z_scored_over_the_models_in_a_fixed_order():
    table = rows(["b", "a", "c", "b", "a", "c"], [0, 0, 0, 1, 1, 1], [3.0, 1.0, 2.0, 0.0, 0.0, 0.0],
                 [1.0, 1.0, 1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 3.0, 1.0, 1.0, 1.0])  # fmt: skip
    ids, z = modelmap.standardised_matrix(table, ["a", "b", "c"])
    assert ids == ["a", "b", "c"]
    # columns: sample 0 (angle, norm, margin), sample 1 (angle, norm, margin), in GEOMETRY order
    angle0 = (np.array([1.0, 3.0, 2.0]) - 2.0) / np.std([1.0, 3.0, 2.0])
    norm1 = (np.array([4.0, 2.0, 6.0]) - 4.0) / np.std([4.0, 2.0, 6.0])
    margin0 = (np.array([0.0, 0.0, 3.0]) - 1.0) / np.std([0.0, 0.0, 3.0])
    np.testing.assert_allclose(z[:, 0], angle0)
    np.testing.assert_allclose(z[:, 4], norm1)
    np.testing.assert_allclose(z[:, 2], margin0)
    np.testing.assert_allclose(z[:, [1, 3, 5]], 0.0)  # constant over the models


def test_a_model_missing_rows_gets_zeros_there_and_the_rest_lines_up():
    table = rows(["a", "a", "b"], [0, 1, 0], [1.0, 5.0, 3.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    ids, z = modelmap.standardised_matrix(table, ["a", "b"])
    assert ids == ["a", "b"] and z.shape == (2, 6)
    np.testing.assert_allclose(z[:, 0], [-1.0, 1.0])  # sample 0's angle, both models
    np.testing.assert_allclose(z[:, 3], [0.0, 0.0])  # sample 1: only a has it, so no spread


def test_the_projection_is_pca_and_the_distances_are_euclidean():
    """The map's PCA (from the Gram matrix) against scikit-learn's PCA by SVD, column by column up
    to sign; its distances against scipy's."""
    from scipy.spatial.distance import pdist, squareform
    from sklearn.decomposition import PCA

    matrix = np.random.default_rng(3).standard_normal((9, 400))
    mine = modelmap.project(matrix, "PCA")
    theirs = PCA(n_components=2, svd_solver="full").fit_transform(matrix)
    for k in range(2):
        sign = np.sign(mine[:, k] @ theirs[:, k])
        np.testing.assert_allclose(mine[:, k], sign * theirs[:, k], atol=1e-9)
    np.testing.assert_allclose(modelmap.pairwise_distances(matrix), squareform(pdist(matrix)), atol=1e-9)


def test_each_axis_is_signed_by_its_largest_entry():
    """The same models give the same map whatever the eigensolver's sign: each axis's entry of
    largest magnitude is positive."""
    matrix = np.random.default_rng(5).standard_normal((7, 50))
    for flipped in (matrix, -matrix):
        placed = modelmap.project(flipped, "PCA")
        for k in range(2):
            assert placed[np.argmax(np.abs(placed[:, k])), k] > 0


def test_the_spanning_tree_of_points_on_a_line_joins_neighbours():
    """Hand-worked: models at 0, 1, 3 and 7 along one axis (given out of order), and a copy of the
    first; the tree joins each to its neighbour, and the identical pair keeps its edge."""
    at = np.array([3.0, 0.0, 7.0, 1.0, 0.0])
    matrix = np.column_stack([at, np.zeros_like(at)])
    assert modelmap.spanning_tree(modelmap.pairwise_distances(matrix)) == [(0, 2), (0, 3), (1, 3), (1, 4)]
