"""Models the researcher gives (`prunescope evaluate --models SOURCE`), made ready to evaluate.

A source is
- a Python file or module with a function (`file.py`, `file.py:make`, `package.module:make`;
  the function defaults to `models`) that returns a list of dicts, one per model:
  `model_id`, `model` (an nn.Module, or a function that builds one), and optionally
  `method`, `family`, `target_sparsity`, `seed`, `parent_id` (default: the model itself,
  a dense model), `head` (the name of the final nn.Linear; found by itself otherwise) and
  `train_epochs`;
- or a prunescope snapshot written with `--checkpoints`: its models, as the run trained them.

Every model takes float images in [0, 1], (N, 3, H, W), and ends in an nn.Linear whose
input is the feature vector f and whose weight rows are the class directions.
`torch.nn.utils.prune`'s reparametrisation (weight_orig * weight_mask) is made permanent
on a copy, so zeros are counted as the network computes with them.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import torch
from torch import nn
from torch.nn.utils import prune

from compute import models as architectures
from compute import schema
from compute.checkpoints import fit_to_state, load_model
from compute.config import InputError
from compute.diagnostics import in_parent_shapes, layer_weights, weight_distance
from compute.layers import layer_counts, layer_table
from compute.masks import LayerPolicy, count_parameters, prunable_layers
from compute.snapshot import read_manifest
from compute.sweep import Trained, prunable_sparsity
from compute.train import to_float

DEFAULT_FUNCTION = "models"


@dataclass
class GivenModel:
    model_id: str
    module: nn.Module
    method: str
    family: str
    target_sparsity: float | None  # None: the measured sparsity
    seed: int
    parent_id: str
    head: str | None
    train_epochs: float
    #: the layers sparsity is measured over (a prunescope snapshot's policy); None: every conv and linear layer
    policy: LayerPolicy | None = None
    #: the parent's filters a structurally pruned model kept (a prunescope snapshot's l1_filter notes)
    kept_filters: dict[str, list[int]] | None = None


class HeadedModel(nn.Module):
    """Any classifier as prunescope evaluates it: `features(x)` is the input of its final
    linear layer `classifier`, caught by a hook while the whole module runs."""

    def __init__(self, module: nn.Module, head: str):
        super().__init__()
        self.module = module
        self.head_name = head
        self.classifier = module.get_submodule(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        caught = []
        handle = self.classifier.register_forward_pre_hook(lambda _m, inputs: caught.append(inputs[0]))
        try:
            logits = self.module(x)
        finally:
            handle.remove()
        return caught[-1].flatten(1), logits

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


def load_function(source: str):
    """The function a source names: `file.py[:function]` or `package.module:function`."""
    target, _, name = source.partition(":")
    name = name or DEFAULT_FUNCTION
    if not target.endswith(".py") and ("/" in target or target.startswith(".")) and not Path(target).exists():
        # a path, not a module name: say it is missing instead of failing to import it
        raise InputError(
            f"--models: {target} does not exist; give a Python file, module:function, a snapshot written with "
            "--checkpoints or a folder of checkpoints with models.json"
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise InputError(f"--models: {path} is not a file; give a Python file, module:function or a snapshot")
        spec = importlib.util.spec_from_file_location(f"prunescope_models_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))  # the file may import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - any error in the user's file is reported in one line
            raise InputError(f"--models: {path} raised {type(err).__name__}: {err}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` would: modules of the working folder import
        try:
            module = importlib.import_module(target)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"--models: cannot import {target!r} ({type(err).__name__}: {err})") from None
        finally:
            sys.path.remove(str(Path.cwd()))
    function = getattr(module, name, None)
    if not callable(function):
        raise InputError(f"--models: {target} has no function {name!r}; define it or name another as {target}:NAME")
    return function, f"{target}:{name}"


def from_function(source: str) -> tuple[list[GivenModel], str]:
    function, where = load_function(source)
    try:
        entries = function()
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--models: {where}() raised {type(err).__name__}: {err}") from None
    if not isinstance(entries, (list, tuple)) or not all(isinstance(e, dict) for e in entries) or not entries:
        # the type, never a repr: a module's repr runs over many lines
        got = f"a dict with keys {', '.join(map(str, list(entries)[:4]))}" if isinstance(entries, dict) else (
            f"an empty {type(entries).__name__}" if isinstance(entries, (list, tuple)) and not entries
            else f"a {type(entries).__name__}"
        )  # fmt: skip
        raise InputError(f"--models: {where}() must return a non-empty list of dicts, one per model (got {got})")
    out = []
    for i, entry in enumerate(entries):
        model_id = entry.get("model_id")
        if not isinstance(model_id, str):
            raise InputError(f"--models: entry {i} of {where}() has no model_id string")
        module = entry.get("model")
        if not isinstance(module, nn.Module) and callable(module):
            try:
                module = module()
            except Exception as err:  # noqa: BLE001
                raise InputError(f"--models: building {model_id} raised {type(err).__name__}: {err}") from None
        if not isinstance(module, nn.Module):
            raise InputError(f"--models: {model_id}'s model is {type(module).__name__}, not a torch nn.Module")
        parent = entry.get("parent_id", model_id)
        family = entry.get("family", "dense" if parent == model_id else "unstructured")
        try:
            numbers = int(entry.get("seed", 0)), float(entry.get("train_epochs", 0))
            target = None if entry.get("target_sparsity") is None else float(entry["target_sparsity"])
        except (TypeError, ValueError):
            raise InputError(f"--models: {model_id}'s seed, train_epochs and target_sparsity must be numbers") from None
        out.append(
            GivenModel(
                model_id, module, str(entry.get("method", "dense" if parent == model_id else "custom")), family,
                target, numbers[0], parent, entry.get("head"), numbers[1],
            )  # fmt: skip
        )
    return out, where


def from_snapshot(path: Path) -> tuple[list[GivenModel], str]:
    """The models of a snapshot written with --checkpoints, with the metadata it recorded."""
    if not (path / schema.CHECKPOINTS_DIR).is_dir():
        raise InputError(f"--models: {path} holds no checkpoints/; recompute it with --checkpoints")
    rows = pl.read_parquet(path / schema.MODELS)
    return [snapshot_model(path, row) for row in rows.iter_rows(named=True)], f"checkpoints of {path}"


def snapshot_model(path: Path, row: dict) -> GivenModel:
    """One model of a snapshot's checkpoints (`row`: its models.parquet row), with what it recorded."""
    manifest = read_manifest(path)
    config, notes = manifest.get("config", {}), manifest.get("model_notes", {})
    policy = LayerPolicy(bool(config.get("prune_first_layer")), bool(config.get("prune_last_layer")))
    try:
        model = load_model(path, row["model_id"])
    except Exception as err:  # noqa: BLE001 - a damaged or foreign checkpoint is reported in one line
        file = path / schema.CHECKPOINTS_DIR / f"{row['model_id']}.pt"
        raise InputError(f"--models: {file} does not load ({type(err).__name__}: {str(err)[:120]})") from None
    return GivenModel(
        row["model_id"], model, row["method"], row["family"], row["target_sparsity"], row["seed"],
        row["parent_id"], "classifier", float(row["train_epochs"]), policy,
        notes.get(row["model_id"], {}).get("kept_filters"),
    )  # fmt: skip


def parents_in_snapshot(models: list[GivenModel], snapshot: Path, held: pl.DataFrame) -> list[GivenModel]:
    """The dense parents that given models name and the snapshot they are added to holds
    (`held`: its models.parquet rows), loaded from its checkpoints: the weights a child's
    sparsity and distance are measured against. InputError when the snapshot kept none."""
    ids = {m.model_id for m in models}
    rows = {row["model_id"]: row for row in held.iter_rows(named=True)}
    out = []
    for parent_id in sorted({m.parent_id for m in models} - ids):
        if parent_id not in rows:
            continue  # load_given names it
        child = next(m.model_id for m in models if m.parent_id == parent_id)
        row = rows[parent_id]
        if row["parent_id"] != parent_id:
            raise InputError(
                f"--models: {child}'s parent {parent_id} in {snapshot} is not a dense model (its parent is "
                f"{row['parent_id']}); a pruned model's parent_id names a model whose parent is itself"
            )
        if not (snapshot / schema.CHECKPOINTS_DIR / f"{parent_id}.pt").is_file():
            raise InputError(
                f"--models: {child}'s parent {parent_id} is in {snapshot}, but not its weights (it was written "
                f"without --checkpoints); give {parent_id} in --models too and pass --replace"
            )
        out.append(snapshot_model(snapshot, row))
    return out


FOLDER_MANIFEST = "models.json"


def plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with torch.nn.utils.prune's weight_orig / weight_mask folded into the
    weight (prunescope's own bool weight_mask buffers are kept)."""
    state = dict(state)
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        mask = state.pop(f"{base}_mask")
        state[base] = state.pop(key) * mask
        state[f"{base}_mask"] = mask.bool()
    return state


def from_checkpoint_folder(path: Path) -> tuple[list[GivenModel], str]:
    """Checkpoints of one of prunescope's architectures, described by `models.json`:
    {"architecture": ..., "num_classes": ..., "image_size": [h, w], "mean": [...], "std": [...],
     "models": [{"model_id", "checkpoint", "method", "family", "target_sparsity", "seed", "parent_id"}, ...]}
    (mean and std: the normalisation the architecture's first layer applies, when a
    checkpoint does not hold it)."""
    manifest_path = path / FOLDER_MANIFEST
    needs = "it needs architecture, num_classes and models (one entry per checkpoint)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except OSError:
        raise InputError(
            f"--models: {path} holds no {FOLDER_MANIFEST} (nor a snapshot's manifest.json); {needs}"
        ) from None
    except ValueError as err:  # json.JSONDecodeError
        raise InputError(f"--models: {manifest_path} is not valid JSON ({err}); {needs}") from None
    try:
        architecture, entries = manifest["architecture"], manifest["models"]
        num_classes = int(manifest["num_classes"])
    except KeyError as err:
        raise InputError(f"--models: {manifest_path} lacks {err}; {needs}") from None
    except (ValueError, TypeError):
        raise InputError(f"--models: {manifest_path}: num_classes must be a whole number; {needs}") from None
    if architecture not in architectures.ARCHITECTURES:
        raise InputError(f"--models: {manifest_path} names architecture {architecture!r}; "
                         f"choose one of {', '.join(architectures.ARCHITECTURES)}")  # fmt: skip
    spec = architectures.ModelSpec(
        architecture, num_classes, tuple(manifest.get("mean", (0.0,) * 3)), tuple(manifest.get("std", (1.0,) * 3)),
        tuple(manifest.get("image_size", (32, 32))),
    )  # fmt: skip
    out = []
    for entry in entries:
        model_id = str(entry.get("model_id"))
        file = path / str(entry.get("checkpoint", f"{model_id}.pt"))
        try:
            state = plain_state(torch.load(file, map_location="cpu", weights_only=True))
            model = architectures.build(spec)
            state = {**{k: v for k, v in model.state_dict().items() if k.startswith("normalize.")}, **state}
            model = fit_to_state(model, state)
        except Exception as err:  # noqa: BLE001 - any checkpoint that does not load is reported in one line
            first = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
            raise InputError(f"--models: {file} does not load into {architecture} ({type(err).__name__}: "
                             f"{first})") from None  # fmt: skip
        missing = [k for k in model.state_dict() if k not in state]
        if missing:
            masks = [k for k in missing if k.endswith("weight_mask")]
            what = (
                f"prunescope's weight_mask buffers ({len(masks)}, e.g. {masks[0]}): a plain state dict needs a "
                "weight_mask beside each conv and linear weight (True where the weight is kept), or give the "
                "models through a models file"
                if masks and len(masks) == len(missing)
                else f"{len(missing)} of {architecture}'s keys ({', '.join(missing[:3])})"
            )
            raise InputError(f"--models: {file} lacks {what}")
        try:
            model.load_state_dict(state)
        except Exception as err:  # noqa: BLE001
            first = str(err).strip().splitlines()[0][:120]
            raise InputError(f"--models: {file} does not load into {architecture} ({first})") from None
        outputs = model.classifier.out_features
        if outputs != num_classes:
            raise InputError(
                f"--models: {manifest_path} says num_classes {num_classes}, but {file.name}'s classifier has {outputs} "
                "outputs; give the number of classes the checkpoints were trained for"
            )
        parent = entry.get("parent_id", model_id)
        try:
            numbers = int(entry.get("seed", 0)), float(entry.get("train_epochs", 0))
            target = None if entry.get("target_sparsity") is None else float(entry["target_sparsity"])
        except (TypeError, ValueError):
            raise InputError(f"--models: {manifest_path}: {model_id}'s seed, train_epochs and target_sparsity "
                             "must be numbers") from None  # fmt: skip
        out.append(
            GivenModel(
                model_id, model, str(entry.get("method", "dense" if parent == model_id else "custom")),
                entry.get("family", "dense" if parent == model_id else "unstructured"), target,
                numbers[0], parent, "classifier", numbers[1],
            )  # fmt: skip
        )
    return out, f"checkpoints in {path}"


def load_given(source: str, existing=None) -> tuple[list[GivenModel], list[GivenModel], str]:
    """The models of a source, checked: unique ids, each parent among them or a dense model of
    the snapshot they are added to (`existing`, a grow.Existing), which comes back loaded as
    the second item. InputError otherwise."""
    path = Path(source).expanduser()
    if path.is_dir():
        models, where = from_snapshot(path) if (path / schema.MANIFEST).is_file() else from_checkpoint_folder(path)
    else:
        models, where = from_function(source)
    for model in models:
        make_permanent(model.module)
    for model in models:
        try:
            schema.check_model_id(model.model_id)
        except ValueError as err:
            raise InputError(f"--models: {err}") from None
        if model.family not in schema.MODEL_FAMILIES:
            allowed = ", ".join(schema.MODEL_FAMILIES)
            raise InputError(f"--models: {model.model_id}'s family {model.family!r} is not one of {allowed}")
    ids = [m.model_id for m in models]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise InputError(f"--models: model id {twice[0]!r} is given twice by {where}; give each model once")
    parents = parents_in_snapshot(models, existing.path, existing.models) if existing is not None else []
    known = ids + [p.model_id for p in parents]
    for model in models:
        if model.parent_id not in known:
            raise InputError(
                f"--models: {model.model_id}'s parent_id {model.parent_id!r} is not among the models "
                f"({', '.join(ids[:5])}{' or the snapshot added to' if parents else ''}); give the dense parent too"
            )
    check_roles(models, parents)
    return models, parents, where


def check_roles(models: list[GivenModel], parents: list[GivenModel] = ()) -> None:
    """What validate holds every snapshot to, checked before any work: a target sparsity in [0, 1];
    a pruned model's parent is a dense model (one whose parent is itself), so no cycle and no chain;
    and a pruned model has no more nonzero weights than its parent has weights (its sparsity, 1 -
    nonzero / the parent's weights, would be negative)."""
    by_id = {m.model_id: m for m in [*parents, *models]}
    for model in models:
        target = model.target_sparsity
        if target is not None and not 0.0 <= target <= 1.0:  # NaN fails both comparisons
            raise InputError(
                f"--models: {model.model_id}'s target_sparsity {target} is not allowed; it must be between 0 and 1"
            )
        parent = by_id[model.parent_id]
        if parent is model:
            continue
        if parent.parent_id != parent.model_id:
            raise InputError(
                f"--models: {model.model_id}'s parent {parent.model_id} is not a dense model (its parent is "
                f"{parent.parent_id}); a pruned model's parent_id names a model whose parent is itself"
            )
        if model.policy is None:  # a prunescope snapshot's models were measured by compute
            mine, theirs = weights(model.module)[1], weights(parent.module)[0]
            if mine > theirs:
                raise InputError(
                    f"--models: {model.model_id} has {mine:,} nonzero conv and linear weights, more than its parent "
                    f"{parent.model_id} has ({theirs:,}); a pruned model is smaller than its dense parent, so "
                    "check its parent_id"
                )


def make_permanent(module: nn.Module) -> nn.Module:
    """torch.nn.utils.prune's masks applied to the weights themselves (weight_orig *
    weight_mask becomes the weight), in place: the module computes exactly as before, and
    its zeros are plain zeros to count."""
    for sub in module.modules():
        for name in [n[: -len("_orig")] for n, _ in sub.named_parameters(recurse=False) if n.endswith("_orig")]:
            prune.remove(sub, name)
    return module


def find_head(module: nn.Module, probe: torch.Tensor, model_id: str, head: str | None) -> str:
    """The name of the final nn.Linear: the last linear layer to run, whose output is the
    model's output. InputError naming what the model ends in when there is none."""
    names = {sub: name for name, sub in module.named_modules()}
    order: list[tuple[str, torch.Tensor]] = []
    handles = [
        sub.register_forward_hook(lambda m, _i, out: order.append((names[m], out)))
        for sub in module.modules()
        if not list(sub.children())
    ]
    try:
        with torch.no_grad():
            logits = module(probe)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"--models: {model_id} fails on the data set's images ({type(err).__name__}: {err})") from None
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise InputError(f"--models: {model_id} returns {type(logits).__name__}, not logits of shape (N, classes)")
    modules = dict(module.named_modules())
    if head is None:
        linear = [name for name, out in order if isinstance(modules[name], nn.Linear)]
        head = linear[-1] if linear else None
    elif head not in modules:
        raise InputError(f"--models: {model_id} has no layer named {head!r} (its 'head'); name its final nn.Linear")
    elif not isinstance(modules[head], nn.Linear):
        raise InputError(
            f"--models: {model_id}'s 'head' {head!r} is a {type(modules[head]).__name__}, not an nn.Linear; "
            "name the final nn.Linear, the layer whose input is the feature vector"
        )
    last_name = order[-1][0] if order else "nothing"
    last = f"{type(modules[last_name]).__name__} {last_name!r}" if order else "no layer"
    if head is None:
        raise InputError(
            f"--models: {model_id} has no nn.Linear (its last layer is {last}); prunescope needs models whose "
            "last operation is a linear classifier on a feature vector"
        )

    def gives_output(name: str) -> bool:
        outputs = [out for n, out in order if n == name]
        return bool(outputs) and outputs[-1].shape == logits.shape and torch.allclose(outputs[-1], logits)

    if not gives_output(head):
        linear = [name for name, _ in order if isinstance(modules[name], nn.Linear) and gives_output(name)]
        if linear:  # another linear layer computes the output: naming it helps
            advice = f"give {linear[-1]!r} as 'head'"
        elif last_name != head:
            advice = f"return the logits of {head!r}, without the {last} that follows it (a softmax, say)"
        else:
            advice = f"its forward changes {head!r}'s output after it (a softmax, say): return the logits themselves"
        raise InputError(
            f"--models: {model_id}'s output is not that of its linear layer {head!r} (its last layer is {last}); "
            f"prunescope needs models whose last operation is the classifier: {advice}"
        )
    return head


def ready(given: GivenModel, probe: torch.Tensor, num_classes: int) -> HeadedModel:
    """The given model with its head found and its output width checked on `probe`."""
    module = given.module.eval()
    broken = [name for name, t in [*module.named_parameters(), *module.named_buffers()]
              if t.is_floating_point() and not torch.isfinite(t).all()]  # fmt: skip
    if broken:
        raise InputError(
            f"--models: {given.model_id}'s {broken[0]} holds NaN or infinite values"
            f"{f' (and {len(broken) - 1} more tensors)' if len(broken) > 1 else ''}; check how it was trained or saved"
        )
    head = find_head(module, probe, given.model_id, given.head)
    width = module.get_submodule(head).out_features
    if width != num_classes:
        raise InputError(
            f"--models: {given.model_id} has {width} outputs; the data set has {num_classes} classes"
        )
    rows = module.get_submodule(head).weight.detach()
    same = [(a, b) for a in range(width) for b in range(a + 1, width) if torch.equal(rows[a], rows[b])]
    if same:  # no decision boundary between them: the geometric margin would be infinite
        (a, b), more = same[0], f" (and {len(same) - 1} more pairs)" if len(same) > 1 else ""
        raise InputError(
            f"--models: {given.model_id}'s classifier {head!r} has the same weights for classes {a} and {b}{more} "
            "(all pruned, say); prunescope measures distances to the boundaries between class directions, "
            "so keep at least one weight that tells them apart"
        )
    return HeadedModel(module, head).eval()


def weights(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) weights of every conv and linear layer."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(m.weight.numel() for m in layers), sum(int((m.weight != 0).sum()) for m in layers)


class GivenSweep:
    """The given models, each made ready and recorded as it is handed on for evaluation;
    what an interrupted run evaluated is skipped."""

    def __init__(self, given: list[GivenModel], dataset, work, device: torch.device, parents: list[GivenModel] = ()):
        self.given, self.dataset, self.work, self.device = given, dataset, work, device
        self.parents = list(parents)  # dense models of the snapshot added to, not evaluated again
        self.fingerprints: dict[str, str] = {}  # no dense model of ours was pruned

    def method_table(self) -> dict[str, dict]:
        table = {}
        for model in self.given:
            table.setdefault(model.method, {"family": model.family, "description": "a model given to evaluate"})
        return table

    def models(self) -> Iterator[Trained]:
        probe = to_float(self.dataset.test_images[:2])
        classes = self.dataset.num_classes
        parents = {m.model_id: m for m in [*self.parents, *self.given]}
        for given in self.given:
            if self.work.evaluated(given.model_id):
                continue
            model = ready(given, probe, classes)
            parent = parents[given.parent_id].module
            counts = layer_counts(model.module, self.dataset.image_shape)
            # a model of a prunescope snapshot, or a child of one's dense model, is measured as the
            # compute step measured its sweep: over the prunable layers of the snapshot's policy
            policy = given.policy if given.policy is not None else parents[given.parent_id].policy
            if policy is not None:
                sparsity = prunable_sparsity(model.module, parent, policy)
                prunable = {name for name, _ in prunable_layers(model.module, policy)}
            else:
                sparsity = 1.0 - weights(model)[1] / weights(parent)[0]
                prunable = {count.layer for count in counts}
            total, nonzero = count_parameters(model)
            effective = in_parent_shapes(model.module, parent, given.kept_filters)
            record = {
                "model_id": given.model_id,
                "method": given.method,
                "family": given.family,
                "target_sparsity": given.target_sparsity if given.target_sparsity is not None else round(sparsity, 4),
                "sparsity": sparsity,
                "params_total": total,
                "params_nonzero": nonzero,
                "flops": sum(count.flops for count in counts),
                "seed": given.seed,
                "parent_id": given.parent_id,
                "train_seconds": 0.0,
                "prune_seconds": 0.0,
                "train_epochs": given.train_epochs,
                "dist_init": None,  # the initialisation of a given model is unknown
                "dist_dense": weight_distance(effective, layer_weights(parent)),
                "notes": {"head": model.head_name},
            }
            self.work.save_trained(record, None, layer_table(given.model_id, counts, prunable))
            yield Trained(record, model.to(self.device))
