"""Corrupted thumbnails: a chosen subset, each exactly the image the models were evaluated on."""

import io

import numpy as np
import polars as pl
import torch
from PIL import Image

from compute import schema
from compute.corrupt import corrupt_uint8
from compute.data import DataSpec, load
from compute.rng import derive_seeds
from compute.snapshot import scan_metrics
from tests.conftest import run_cli


def test_thumbnails_are_the_evaluated_images_of_the_most_fragile_and_a_stratified_rest(tmp_path):
    out = tmp_path / "thumbs"
    result = run_cli(
        "compute", "--preset", "tiny", "--out", str(out), "--quiet", "--thumbnail-samples", "10",
        "--methods", "dense,magnitude", "--sparsities", "0.9", "--corruptions", "gaussian_noise,contrast",
        "--severities", "1,5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert run_cli("validate", str(out)).returncode == 0
    thumbs = pl.read_parquet(out / schema.THUMBNAILS)
    conditions = pl.read_parquet(out / schema.CONDITIONS)
    corrupted = conditions.filter(pl.col("corruption") != "clean")
    assert thumbs["sample_id"].n_unique() == 10
    assert len(thumbs) == 10 * len(corrupted)

    # the five most misclassified samples are among them
    errors = (
        scan_metrics(out)
        .group_by("sample_id")
        .agg((~pl.col("correct")).sum().alias("e"))
        .sort("e", "sample_id", descending=[True, False])
        .collect()
    )
    assert set(errors["sample_id"].head(5)) <= set(thumbs["sample_id"])

    data = load(DataSpec("digits", n_test=60, n_train=300))
    position = {int(s): i for i, s in enumerate(data.test_index)}
    names = list(schema.CORRUPTION_FAMILIES)
    for row in thumbs.join(conditions, on="condition_id").head(12).iter_rows(named=True):
        clean = data.test_images[position[row["sample_id"]]][None]
        seed = derive_seeds(0, names.index(row["corruption"]), torch.tensor([row["sample_id"]]))
        expected = corrupt_uint8(clean, row["corruption"], row["severity"], seed)[0]
        picture = np.asarray(Image.open(io.BytesIO(row["thumbnail"])))
        if picture.ndim == 2:
            picture = np.repeat(picture[..., None], 3, axis=2)
        np.testing.assert_array_equal(picture, expected.permute(1, 2, 0).numpy())
