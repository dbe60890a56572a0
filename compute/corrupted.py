"""The test set under every condition, made once per run and reused by every model.

Each corrupted condition's images are generated (or read from the released CIFAR-10-C
files) once, saved as uint8 in the work folder, so a resumed run does not make them
again, and held in memory while they fit in `MEMORY_BYTES`; beyond that each model reads
them back from the memory-mapped files.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from compute import cifar10c, corrupt, data, schema
from compute.config import ComputeConfig
from compute.rng import derive_seeds
from compute.workdir import SharedConditions, WorkFolder, save_npy_atomic

#: corrupted test sets kept in memory up to this many bytes in all (the rest: memory-mapped files)
MEMORY_BYTES = 2 * 1024**3


def condition_images(
    dataset: data.Dataset, condition: schema.Condition, cfg: ComputeConfig, device: torch.device
) -> torch.Tensor:
    """The test images under one condition, uint8 on `device`: generated, or read from
    the released CIFAR-10-C files when --cifar10c is given."""
    images = dataset.test_images.to(device)
    if condition.corruption == schema.CLEAN:
        return images
    if cfg.cifar10c:
        rows = cifar10c.load_condition(
            cfg.cifar10c, condition.corruption, condition.severity, dataset.test_index.numpy()
        )
        return torch.from_numpy(rows).to(device)
    corruption_index = list(schema.CORRUPTION_FAMILIES).index(condition.corruption)
    # the same per-sample seed at every severity: severity curves compare like with like
    seeds = derive_seeds(cfg.corruption_seed, corruption_index, dataset.test_index)
    out = torch.empty_like(images)
    for start in range(0, len(images), cfg.eval_batch_size):
        stop = start + cfg.eval_batch_size
        out[start:stop] = corrupt.corrupt_uint8(
            images[start:stop], condition.corruption, condition.severity, seeds[start:stop]
        )
    return out


class ConditionImages:
    """uint8 test images per condition id, from the work folder (made there once)."""

    def __init__(self, dataset: data.Dataset, conditions: list[schema.Condition], work: WorkFolder):
        self.dataset, self.conditions, self.work = dataset, conditions, work
        self.memory: dict[int, np.ndarray] = {}

    def prepare(
        self, cfg: ComputeConfig, device: torch.device, progress: bool, shared: SharedConditions | None = None
    ) -> float:
        """Make every corrupted condition that the work folder lacks, or under `--jobs` (`shared`)
        link in the one another worker made; returns seconds spent (under `--jobs`, waits for
        another worker's set included)."""
        start = time.perf_counter()
        missing = [
            c
            for c in self.conditions
            if c.corruption != schema.CLEAN and not self.work.condition_path(c.condition_id).is_file()
        ]
        if shared is not None:
            missing = shared.in_turn(missing)
        for condition in tqdm(missing, desc="corrupt", unit="condition", disable=not progress or not missing):
            if shared is None:
                self.work.save_condition(condition.condition_id, self.make(condition, cfg, device))
                continue
            with shared.claimed(condition.condition_id):  # another worker may be making it: wait for it
                source = shared.path(condition.condition_id)
                if not source.is_file():
                    save_npy_atomic(source, self.make(condition, cfg, device))
                self.work.link_condition(condition.condition_id, source)
        per_condition = self.dataset.test_images.numel()
        in_memory = MEMORY_BYTES // max(1, per_condition)
        for condition in self.conditions[: in_memory + 1]:
            if condition.corruption != schema.CLEAN:
                self.memory[condition.condition_id] = np.load(self._path(condition))
        return time.perf_counter() - start

    def make(self, condition: schema.Condition, cfg: ComputeConfig, device: torch.device) -> np.ndarray:
        return condition_images(self.dataset, condition, cfg, device).cpu().numpy()

    def _path(self, condition: schema.Condition) -> Path:
        return self.work.condition_path(condition.condition_id)

    def images(self, condition: schema.Condition) -> torch.Tensor:
        """The condition's test images, uint8 (N, C, H, W) on the CPU."""
        if condition.corruption == schema.CLEAN:
            return self.dataset.test_images
        array = self.memory.get(condition.condition_id)
        if array is None:
            array = np.load(self._path(condition), mmap_mode="r")
        return torch.from_numpy(np.ascontiguousarray(array))


class SampleImages:
    """The test images of some samples under every condition, made again on `device` exactly
    as a run makes them (per-sample seeds, or the samples' CIFAR-10-C rows): for the
    thumbnails that `compute --jobs` chooses from every worker's models, once their images are gone."""

    def __init__(
        self,
        dataset: data.Dataset,
        sample_ids: np.ndarray,
        conditions: list[schema.Condition],
        cfg: ComputeConfig,
        device: torch.device,
    ):
        keep = torch.from_numpy(np.isin(dataset.test_index.numpy(), sample_ids))
        self.dataset = dataclasses.replace(
            dataset,
            test_images=dataset.test_images[keep],
            test_labels=dataset.test_labels[keep],
            test_index=dataset.test_index[keep],
        )
        self.conditions, self.cfg, self.device = conditions, cfg, device

    def images(self, condition: schema.Condition) -> torch.Tensor:
        """The samples' images under the condition, uint8 (n, C, H, W) on the CPU."""
        return condition_images(self.dataset, condition, self.cfg, self.device).cpu()
