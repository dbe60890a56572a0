"""The snapshot contract shared by the compute writer and the dashboard reader.

Torch-free on purpose: the Streamlit app imports this module. docs/DESIGN.md is the prose
version of what is here; keep the two in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 5
#: versions a reader accepts (`table_schemas` says what each lacks): version 4 lacks answers.parquet (the app
#: computes it from metrics/); version 3 also the class angles of embedding.parquet and the dynamic dead-ReLU
#: rate; version 2 also the per-layer table, the occlusion table and the model diagnostics of models.parquet
READABLE_VERSIONS: tuple[int, ...] = (2, 3, 4, 5)

MANIFEST = "manifest.json"
MODELS = "models.parquet"
CONDITIONS = "conditions.parquet"
SAMPLES = "samples.parquet"
METRICS_DIR = "metrics"
SUMMARY = "summary.parquet"
CLASSES = "classes.parquet"
EMBEDDING = "embedding.parquet"
LAYERS = "layers.parquet"
ANSWERS = "answers.parquet"  # per model and condition: correctness bits over the samples, clean predictions
THUMBNAILS = "thumbnails.parquet"  # optional: corrupted images of a subset of samples
OCCLUSION = "occlusion.parquet"  # optional: patch occlusion of the first thumbnail samples
CHECKPOINTS_DIR = "checkpoints"  # optional: <model_id>.pt state dicts (torch.load(..., weights_only=True))

PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 9}

# --- names used everywhere -------------------------------------------------------

CLEAN = "clean"

#: corruption -> family, in the order of the CIFAR-10-C paper (15) and its extras (4).
CORRUPTION_FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise",
    "shot_noise": "noise",
    "impulse_noise": "noise",
    "defocus_blur": "blur",
    "glass_blur": "blur",
    "motion_blur": "blur",
    "zoom_blur": "blur",
    "snow": "weather",
    "frost": "weather",
    "fog": "weather",
    "brightness": "digital",
    "contrast": "digital",
    "elastic_transform": "digital",
    "pixelate": "digital",
    "jpeg_compression": "digital",
    "speckle_noise": "extra",
    "gaussian_blur": "extra",
    "spatter": "extra",
    "saturate": "extra",
}
#: The 15 corruptions whose 15 x 5 conditions define mean corruption accuracy.
BENCHMARK_CORRUPTIONS: tuple[str, ...] = tuple(
    name for name, family in CORRUPTION_FAMILIES.items() if family != "extra"
)
EXTRA_CORRUPTIONS: tuple[str, ...] = tuple(name for name, family in CORRUPTION_FAMILIES.items() if family == "extra")
CONDITION_FAMILIES: tuple[str, ...] = ("clean", "noise", "blur", "weather", "digital", "extra")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

#: method family per short method id (docs/DESIGN.md "Names used everywhere").
METHOD_FAMILIES: dict[str, str] = {
    "dense": "dense",
    "random": "unstructured",
    "magnitude": "unstructured",
    "layer_magnitude": "unstructured",
    "imp": "unstructured",
    "lrr": "unstructured",
    "snip": "at_init",
    "grasp": "at_init",
    "synflow": "at_init",
    "rigl": "dynamic",
    "set": "dynamic",
    "l1_filter": "structured",
    "edge_popup": "supermask",
    "biprop": "supermask",
}
MODEL_FAMILIES: tuple[str, ...] = (
    "dense",
    "unstructured",
    "structured",
    "at_init",
    "dynamic",
    "supermask",
)

# --- per-sample metrics ----------------------------------------------------------

#: The float metrics of every model x condition x sample row, in column order.
FLOAT_METRICS: tuple[str, ...] = (
    "p_true",
    "confidence",
    "loss",
    "feat_norm",
    "angle_true",
    "angle_pred",
    "logit_margin",
    "geom_margin",
)
#: Quantiles kept per model x condition in summary.parquet.
SUMMARY_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)


def quantile_column(metric: str, q: float) -> str:
    return f"{metric}_q{round(q * 100):02d}"


#: per-model diagnostics of models.parquet (nullable: null where a model has no value)
RELU_DIAGNOSTICS: tuple[str, ...] = ("dead_relu", "dynamic_dead_relu")
MODEL_DIAGNOSTICS: tuple[str, ...] = (*RELU_DIAGNOSTICS, "dist_init", "dist_dense")
#: the layer kinds of layers.parquet, by torch module
LAYER_KINDS: tuple[str, ...] = ("conv", "linear")

# --- table schemas ---------------------------------------------------------------

MODELS_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("method", pa.string()),
        ("family", pa.string()),
        ("target_sparsity", pa.float32()),
        ("sparsity", pa.float32()),
        ("params_total", pa.int64()),
        ("params_nonzero", pa.int64()),
        ("flops", pa.int64()),
        ("seed", pa.int32()),
        ("parent_id", pa.string()),
        ("clean_accuracy", pa.float32()),
        ("train_seconds", pa.float32()),
        ("prune_seconds", pa.float32()),
        # every epoch of training behind the model, the dense training it was pruned from included
        ("train_epochs", pa.int32()),
        # fraction of ReLU output units never above zero on the clean test images
        ("dead_relu", pa.float32()),
        # per clean test image the fraction of ReLU output units at zero, averaged over the images
        ("dynamic_dead_relu", pa.float32()),
        # l2 distance of the conv and linear weights to the dense initialisation and to the dense parent
        ("dist_init", pa.float32()),
        ("dist_dense", pa.float32()),
    ]
)

LAYERS_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("layer", pa.string()),  # the module's qualified name
        ("kind", pa.string()),  # LAYER_KINDS
        ("prunable", pa.bool_()),  # the sweep's layer policy lets methods prune it
        ("params", pa.int64()),  # weight elements, as the layer computes (physical after structured pruning)
        ("nonzero", pa.int64()),
        ("sparsity", pa.float32()),  # 1 - nonzero / params
        ("flops", pa.int64()),  # multiply-adds per image by its nonzero weights; sums to models.flops
    ]
)

CONDITIONS_SCHEMA = pa.schema(
    [
        ("condition_id", pa.int16()),
        ("corruption", pa.string()),
        ("family", pa.string()),
        ("severity", pa.int8()),
    ]
)

SAMPLES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.int32()),
        ("label", pa.int16()),
        ("class_name", pa.string()),
        ("thumbnail", pa.binary()),
    ]
)

#: metrics/ layout (schema version 5): a model's rows are stored block by block, each block an
#: evenly spaced subset of the samples (block = rank % sample_blocks(N), rank the sample's position
#: among the sample ids in ascending order), in row groups of one block x CONDITIONS_PER_GROUP
#: conditions (joined up to MIN_ROW_GROUP_ROWS); a reader that wants one sample, an evenly
#: spaced subset or a few conditions then skips the other row groups by their statistics
BLOCK_SAMPLES = 625
MAX_SAMPLE_BLOCKS = 32
CONDITIONS_PER_GROUP = 16
MIN_ROW_GROUP_ROWS = 10_000  # 625 samples x 16 conditions: one row group per block x 16 conditions at CIFAR scale


def sample_blocks(n_samples: int) -> int:
    """How many blocks the samples of a snapshot are dealt into: about BLOCK_SAMPLES each."""
    return max(1, min(MAX_SAMPLE_BLOCKS, n_samples // BLOCK_SAMPLES))


METRICS_SCHEMA = pa.schema(
    [
        ("condition_id", pa.int16()),
        ("sample_id", pa.int32()),
        ("block", pa.int16()),  # the sample's block: its rank among the sample ids modulo sample_blocks(N)
        ("pred", pa.int16()),
        ("correct", pa.bool_()),
        *[(name, pa.float32()) for name in FLOAT_METRICS],
    ]
)

SUMMARY_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("condition_id", pa.int16()),
        ("n", pa.int32()),
        ("accuracy", pa.float32()),
        *[
            field
            for name in FLOAT_METRICS
            for field in [
                (f"{name}_mean", pa.float32()),
                *[(quantile_column(name, q), pa.float32()) for q in SUMMARY_QUANTILES],
            ]
        ],
    ]
)

CLASSES_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("class", pa.int16()),
        ("class_name", pa.string()),
        ("weight_norm", pa.float32()),
        ("bias", pa.float32()),
        # angle in degrees between this class's weight row and every class's row,
        # indexed by class (0 on the diagonal, NaN where a row is all zero).
        ("angle_to", pa.list_(pa.float32())),
    ]
)

EMBEDDING_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("sample_id", pa.int32()),
        ("x", pa.float32()),
        ("y", pa.float32()),
        # angle in degrees between the clean feature vector and every class direction, indexed
        # by class (angles[label] is the clean angle_true of metrics/)
        ("angles", pa.list_(pa.float32())),
    ]
)

THUMBNAILS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.int32()),
        ("condition_id", pa.int16()),
        ("thumbnail", pa.binary()),  # PNG of the image exactly as the models saw it
    ]
)

OCCLUSION_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("condition_id", pa.int16()),
        ("sample_id", pa.int32()),
        ("row", pa.int16()),  # the patch's top, in pixels
        ("col", pa.int16()),  # the patch's left, in pixels
        ("d_angle_true", pa.float32()),  # angle_true with the patch minus without, degrees
        ("d_feat_norm", pa.float32()),  # feat_norm with the patch minus without
    ]
)

#: optional tables: written on request, checked when present
#: answers.parquet (compute.answers): one row per model x condition
ANSWERS_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("condition_id", pa.int16()),
        ("correct", pa.binary()),  # bit i: correct on the i-th sample in sample_id order (numpy.packbits)
        ("pred", pa.list_(pa.int16())),  # every sample's prediction, on clean conditions only (else null)
    ]
)

OPTIONAL_SCHEMAS: dict[str, pa.Schema] = {THUMBNAILS: THUMBNAILS_SCHEMA, OCCLUSION: OCCLUSION_SCHEMA}

#: file name -> schema for every single-file table of a snapshot.
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    MODELS: MODELS_SCHEMA,
    CONDITIONS: CONDITIONS_SCHEMA,
    SAMPLES: SAMPLES_SCHEMA,
    SUMMARY: SUMMARY_SCHEMA,
    CLASSES: CLASSES_SCHEMA,
    EMBEDDING: EMBEDDING_SCHEMA,
    LAYERS: LAYERS_SCHEMA,
    ANSWERS: ANSWERS_SCHEMA,
}


def table_schemas(version: int) -> dict[str, pa.Schema]:
    """The single-file tables a snapshot of schema `version` must hold: version 4 has no
    answers.parquet; version 3 neither, nor class angles in embedding.parquet, nor
    dynamic_dead_relu in models.parquet; version 2 neither, nor layers.parquet, nor any
    diagnostics in models.parquet."""
    if version >= 5:
        return TABLE_SCHEMAS
    older = {name: table for name, table in TABLE_SCHEMAS.items() if name != ANSWERS}
    if version == 4:
        return older
    older[EMBEDDING] = pa.schema([f for f in EMBEDDING_SCHEMA if f.name != "angles"])
    older[MODELS] = pa.schema([f for f in MODELS_SCHEMA if f.name != "dynamic_dead_relu"])
    if version == 3:
        return older
    older[MODELS] = pa.schema([f for f in MODELS_SCHEMA if f.name not in MODEL_DIAGNOSTICS])
    del older[LAYERS]
    return older


def metrics_schema(version: int) -> pa.Schema:
    """The per-sample files' schema of a snapshot of schema `version`: before 5, without `block`."""
    return METRICS_SCHEMA if version >= 5 else pa.schema([f for f in METRICS_SCHEMA if f.name != "block"])


def metrics_partition(model_id: str) -> str:
    """Folder (relative to the snapshot) that holds one model's per-sample rows."""
    return f"{METRICS_DIR}/model_id={model_id}"


def check_model_id(model_id: str) -> str:
    """Model ids become folder names; keep them to a safe alphabet."""
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not model_id or not set(model_id) <= allowed:
        raise ValueError(f"model id {model_id!r} may hold only letters, digits, '.', '_' and '-'")
    return model_id


def model_id_for(method: str, target_sparsity: float, seed: int) -> str:
    """The id of a model: `dense-s0`, `magnitude-0.9-s0`, `imp-0.988-s2`."""
    if method == "dense":
        return f"dense-s{seed}"
    return f"{method}-{target_sparsity:.4g}-s{seed}"


@dataclass(frozen=True)
class Condition:
    condition_id: int
    corruption: str
    family: str
    severity: int

    @property
    def label(self) -> str:
        return CLEAN if self.corruption == CLEAN else f"{self.corruption} s{self.severity}"


def build_conditions(corruptions: list[str] | tuple[str, ...], severities) -> list[Condition]:
    """Condition 0 is clean; then every corruption x severity, corruption-major."""
    out = [Condition(0, CLEAN, "clean", 0)]
    for name in corruptions:
        for severity in severities:
            out.append(Condition(len(out), name, CORRUPTION_FAMILIES[name], int(severity)))
    return out


class SchemaVersionError(ValueError):
    """A snapshot written by another schema version than this code reads."""


def check_schema_version(found) -> None:
    if found not in READABLE_VERSIONS:
        earlier = ", ".join(str(v) for v in READABLE_VERSIONS if v != SCHEMA_VERSION)
        raise SchemaVersionError(
            f"schema_version is {found!r:.20} but this prunescope reads version {SCHEMA_VERSION} "
            f"(and the earlier {earlier})"
        )
