"""The layout of metrics/ (schema version 5): samples dealt into blocks by rank, row groups of
one block and a run of conditions, and the readers that take an evenly spaced subset from
as few blocks as they can."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from compute import schema
from tests.conftest import run_cli, synthesised


@pytest.fixture(scope="module")
def blocked(tmp_path_factory):
    """A synthetic snapshot of 1,300 samples: two blocks."""
    return synthesised(tmp_path_factory, "blocked", 3, 1300)


def test_each_row_group_holds_one_block_of_samples_dealt_by_rank(blocked):
    assert schema.sample_blocks(1300) == 2 and schema.sample_blocks(180) == 1 and schema.sample_blocks(10_000) == 16
    ids = np.sort(pq.read_table(blocked / schema.SAMPLES, columns=["sample_id"])["sample_id"].to_numpy())
    for file in sorted((blocked / schema.METRICS_DIR).rglob("*.parquet")):
        parquet = pq.ParquetFile(file)
        seen = []
        for group in range(parquet.num_row_groups):
            rows = parquet.read_row_group(group, columns=["block", "condition_id", "sample_id"]).to_pandas()
            (block,) = set(rows["block"])  # one block per row group
            rank = np.searchsorted(ids, rows["sample_id"].to_numpy())
            assert (rank % 2 == block).all()
            conditions = sorted(set(rows["condition_id"]))
            assert len(conditions) * len(ids[block::2]) == len(rows)  # whole conditions of the block
            seen += [(block, c) for c in conditions]
        assert len(seen) == len(set(seen)) == 2 * 96 and parquet.num_row_groups > 2


def test_an_evenly_spaced_subset_comes_from_the_fewest_blocks_and_reads_only_its_rows(blocked):
    from dashboard import queries, store

    snapshot = store.open_snapshot(blocked)
    ids = snapshot.samples["sample_id"].sort().to_list()
    few = queries.sample_subset(snapshot, 100)
    block0 = ids[0::2]
    assert few == queries.evenly_spaced(block0, 100)  # within block 0, itself evenly spaced
    many = queries.sample_subset(snapshot, 1000)  # more than a block holds: both blocks
    assert many == queries.evenly_spaced(ids, 1000)
    spread = [s for s in ids if s % 5 == 3]  # 3, 8, 13, 18, ...: in both blocks
    assert queries.sample_subset(snapshot, 50, spread) == queries.evenly_spaced(spread[1::2], 50)  # block 0's
    odd = [s for s in ids if s % 10 == 3]  # all in block 1: block 0, holding none, is skipped
    assert queries.sample_subset(snapshot, 50, odd) == queries.evenly_spaced(odd, 50)
    rows = store.scan_metrics(snapshot, ["dense-s0"], [0, 5], ["feat_norm"], few).collect()
    whole = pl.read_parquet(blocked / schema.metrics_partition("dense-s0") / "*.parquet")
    expected = whole.filter(pl.col("sample_id").is_in(few) & pl.col("condition_id").is_in([0, 5]))
    assert rows.sort("condition_id", "sample_id").select("condition_id", "sample_id", "feat_norm").equals(
        expected.sort("condition_id", "sample_id").select("condition_id", "sample_id", "feat_norm")
    )
    assert "block" not in store.scan_metrics(snapshot, ["dense-s0"]).collect_schema().names()


def test_validate_rejects_a_sample_in_the_wrong_block(blocked, tmp_path):
    import shutil

    copy = shutil.copytree(blocked, tmp_path / "copy")
    file = next((copy / schema.METRICS_DIR).rglob("*.parquet"))
    table = pl.read_parquet(file).with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(1 - pl.col("block")).otherwise(pl.col("block")).alias("block")
    )
    pq.write_table(table.to_arrow().cast(schema.METRICS_SCHEMA), file)
    result = run_cli("validate", str(copy))
    assert result.returncode == 1 and "column block: is not the sample's rank modulo 2" in result.stdout, result.stdout


def test_synth_keeps_the_mantissa_bits_asked_for(tmp_path):
    out = tmp_path / "coarse"
    assert run_cli("synth", "--models", "2", "--samples", "40", "--metric-bits", "10", "--out", str(out),
                   "--quiet").returncode == 0  # fmt: skip (and it validates: conftest checks what it wrote)
    values = pl.read_parquet(out / schema.METRICS_DIR / "**" / "*.parquet")["feat_norm"].to_numpy()
    assert not (values.view(np.uint32) & ((1 << 13) - 1)).any()  # the 13 lowest mantissa bits are zero
    import json

    assert json.loads((out / schema.MANIFEST).read_text())["storage"]["metric_bits"] == 10
