"""A seconds-long run for tests and smoke checks: few images, few epochs."""

from compute.config import ComputeConfig

PRESET = ComputeConfig(
    n_test=60,
    n_train=300,
    sparsities=(0.5, 0.9),
    severities=(1, 3),
    epochs=2,
    finetune_epochs=1,
    batch_size=64,
    round_epochs=1,
    synflow_rounds=10,
    score_batch=64,
    dst_update_every=2,
)
