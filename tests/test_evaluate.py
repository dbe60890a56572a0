"""`prunescope evaluate`: the researcher's own models, from a models file or a snapshot's
checkpoints, through the same evaluation as `compute`; checked against an independent
forward-hook computation of the geometry and against the original run."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from compute import schema
from compute.data import DataSpec, load
from compute.snapshot import scan_metrics
from tests.conftest import REPO, assert_refused, relu_rates_by_hooks, run_cli, run_cli_here
from tests.test_data import write_cifar10

EXAMPLE = REPO / "examples" / "my_models.py"


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root)
    return root


def evaluate(*args: str):
    return run_cli("evaluate", *args, "--quiet")


def evaluate_refused(*args: str):
    """evaluate with input it refuses, run through main() in this process (see run_cli_here)."""
    return run_cli_here("evaluate", *args, "--quiet")


def test_a_models_file_gives_a_snapshot_whose_geometry_matches_a_hook(cifar, tmp_path):
    out = tmp_path / "mine"
    result = evaluate(
        "--models", str(EXAMPLE), "--dataset", "cifar10", "--data-root", str(cifar),
        "--corruptions", "gaussian_noise", "--severities", "2", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 models x 2 conditions x 20 samples" in result.stdout
    assert run_cli("validate", str(out)).returncode == 0

    spec = importlib.util.spec_from_file_location("example_models", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    entries = {e["model_id"]: e for e in example.models()}
    data = load(DataSpec("cifar10", n_test=0, n_train=0, root=str(cifar)))
    x = data.test_images.double() / 255
    y = data.test_labels.numpy()
    metrics = scan_metrics(out).filter(pl.col("condition_id") == 0).collect().sort("sample_id")
    models = pl.read_parquet(out / schema.MODELS)
    for model_id, entry in entries.items():
        module = entry["model"] if isinstance(entry["model"], nn.Module) else entry["model"]()
        module = module.double().eval()
        head = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
        caught = []
        handle = head.register_forward_hook(lambda m, i, o, caught=caught: caught.append(i[0]))
        with torch.no_grad():
            logits = module(x).numpy()
        handle.remove()
        f = caught[0].numpy()
        w = head.weight.detach().numpy()
        rows = metrics.filter(pl.col("model_id") == model_id)
        norm = np.linalg.norm(f, axis=1)
        cos = (f * w[y]).sum(1) / (norm * np.linalg.norm(w[y], axis=1))
        others = np.where(np.eye(w.shape[0], dtype=bool)[y], -np.inf, logits)
        np.testing.assert_allclose(rows["feat_norm"].to_numpy(), norm, rtol=1e-4)
        np.testing.assert_allclose(rows["angle_true"].to_numpy(), np.degrees(np.arccos(np.clip(cos, -1, 1))), atol=1e-2)
        np.testing.assert_allclose(
            rows["logit_margin"].to_numpy(), logits[np.arange(len(y)), y] - others.max(1), rtol=1e-3, atol=1e-4
        )
        assert rows["pred"].to_list() == logits.argmax(1).tolist()
        # sparsity over every conv and linear weight, counted independently from the masks
        weights = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        masks = [getattr(m, "weight_mask", torch.ones_like(m.weight)) for m in weights]
        expected = 1 - sum(int(mask.sum()) for mask in masks) / sum(m.numel() for m in masks)
        row = models.filter(pl.col("model_id") == model_id).row(0, named=True)
        assert row["sparsity"] == pytest.approx(expected, abs=1e-6)
    assert models.filter(pl.col("model_id") == "resnet18-l1-0.8")["parent_id"][0] == "resnet18-dense"
    manifest = json.loads((out / schema.MANIFEST).read_text())
    assert manifest["architecture"] == "given" and manifest["source"].endswith("my_models.py:models")
    check_diagnostics_of_the_example(out, example, x.float())


def check_diagnostics_of_the_example(out, example, x):
    """dead_relu from one hooked forward (torchvision's blocks apply one ReLU module twice),
    dist_dense from the two modules' weights, no dist_init, and torchvision's layer names."""
    entries = {e["model_id"]: e["model"] for e in example.models()}
    entries["small-cnn"] = entries["small-cnn"]()
    models = {r["model_id"]: r for r in pl.read_parquet(out / schema.MODELS).iter_rows(named=True)}
    for model_id, module in entries.items():
        dead, at_zero = relu_rates_by_hooks(module, x)
        assert models[model_id]["dead_relu"] == pytest.approx(dead, abs=1e-7), model_id
        assert models[model_id]["dynamic_dead_relu"] == pytest.approx(at_zero, abs=1e-7), model_id
        assert models[model_id]["dist_init"] is None
    assert models["resnet18-dense"]["dist_dense"] == models["small-cnn"]["dist_dense"] == 0.0
    pruned, dense = entries["resnet18-l1-0.8"].state_dict(), entries["resnet18-dense"].state_dict()
    # torch.nn.utils.prune keeps weight_orig and weight_mask: the weight it computes with is their product
    layers = [k.removesuffix(".weight_orig") for k in pruned if k.endswith(".weight_orig")]
    gaps = [pruned[f"{n}.weight_orig"] * pruned[f"{n}.weight_mask"] - dense[f"{n}.weight"] for n in layers]
    distance = torch.cat([gap.double().flatten() for gap in gaps]).norm()
    assert models["resnet18-l1-0.8"]["dist_dense"] == pytest.approx(distance.item(), rel=1e-6)
    table = pl.read_parquet(out / schema.LAYERS).filter(pl.col("model_id") == "resnet18-dense")
    assert table["layer"].to_list() == layers and table["prunable"].all()  # every layer of a given model
    assert table.filter(pl.col("layer") == "fc")["params"][0] == 512 * 10


def test_checkpoints_of_a_compute_run_evaluate_to_the_same_snapshot(tmp_path):
    original = tmp_path / "run"
    result = run_cli(
        "compute", "--preset", "tiny", "--methods", "dense,magnitude,l1_filter", "--checkpoints",
        "--out", str(original), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = tmp_path / "again"
    result = evaluate(
        "--models", str(original), "--dataset", "digits", "--n-test", "60",
        "--corruptions", "gaussian_noise,defocus_blur,contrast", "--severities", "1,3", "--out", str(again),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = ["model_id", "condition_id", "sample_id"]
    assert scan_metrics(again).collect().sort(rows).equals(scan_metrics(original).collect().sort(rows))
    timing = ["train_seconds", "prune_seconds", "dist_init"]  # a given model's initialisation is unknown
    for name in (schema.MODELS, schema.SUMMARY, schema.CLASSES, schema.EMBEDDING, schema.LAYERS, schema.ANSWERS):
        a, b = pl.read_parquet(again / name), pl.read_parquet(original / name)
        a, b = a.drop([c for c in timing if c in a.columns]), b.drop([c for c in timing if c in b.columns])
        assert a.equals(b), name  # dead_relu and dist_dense too, l1_filter's from the kept filters the notes record
    assert pl.read_parquet(again / schema.MODELS)["dist_init"].null_count() == 5


BAD_FILES = {
    "raises": ("def models():\n    raise RuntimeError('no weights here')\n", "raised RuntimeError: no weights here"),
    "wrong type": ("def models():\n    return 42\n", "must return a non-empty list of dicts"),
    "not a module": ("def models():\n    return [{'model_id': 'a', 'model': 'resnet'}]\n", "a's model is str"),
    "width": (
        "from torch import nn\n"
        "def models():\n    return [{'model_id': 'w', 'model': nn.Sequential(nn.Flatten(), nn.Linear(3072, 7))}]\n",
        "w has 7 outputs; the data set has 10 classes",
    ),
    "no linear end": (
        "from torch import nn\n"
        "def models():\n"
        "    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10), nn.Softmax(dim=1))\n"
        "    return [{'model_id': 's', 'model': net}]\n",
        ("last layer is Softmax '2'", "without the Softmax '2' that follows it"),
    ),
    "softmax in forward": (
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(3072, 10)\n"
        "    def forward(self, x):\n        return torch.softmax(self.fc(x.flatten(1)), 1)\n"
        "def models():\n    return [{'model_id': 'f', 'model': Net()}]\n",
        ("its forward changes 'fc''s output after it", "return the logits themselves"),
    ),
    "another linear runs last": (
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.fc, self.aux = nn.Linear(3072, 10), nn.Linear(3072, 10)\n"
        "    def forward(self, x):\n        out = self.fc(x.flatten(1))\n        self.aux(x.flatten(1))\n"
        "        return out\n"
        "def models():\n    return [{'model_id': 'a', 'model': Net()}]\n",
        ("not that of its linear layer 'aux'", "give 'fc' as 'head'"),
    ),
    "head names a conv": (
        "from torch import nn\n"
        "def models():\n    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(1800, 10))\n"
        "    return [{'model_id': 'c', 'model': net, 'head': '0'}]\n",
        ("c's 'head' '0' is a Conv2d, not an nn.Linear", "name the final nn.Linear"),
    ),
    "equal class rows": (
        "import torch\nfrom torch import nn\n"
        "def models():\n    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))\n"
        "    with torch.no_grad():\n        net[1].weight[3:5] = 0\n"
        "    return [{'model_id': 'e', 'model': net}]\n",
        ("e's classifier '1' has the same weights for classes 3 and 4",),
    ),
    "NaN weights": (
        "import math\nfrom torch import nn\n"
        "def models():\n    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(1800, 10))\n"
        "    net[0].weight.data[0, 0, 0, 0] = math.nan\n"
        "    return [{'model_id': 'n', 'model': net}]\n",
        ("n's 0.weight holds NaN or infinite values",),
    ),
    "duplicate ids": (
        "from torch import nn\n"
        "def models():\n    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))\n"
        "    return [{'model_id': 'd', 'model': net}, {'model_id': 'd', 'model': net}]\n",
        "model id 'd' is given twice",
    ),
    "missing parent": (
        "from torch import nn\n"
        "def models():\n    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))\n"
        "    return [{'model_id': 'p', 'model': net, 'parent_id': 'nowhere'}]\n",
        "p's parent_id 'nowhere' is not among the models",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_models_get_one_line_and_write_nothing(cifar, tmp_path, case):
    source, message = BAD_FILES[case]
    (tmp_path / "bad.py").write_text(source)
    out = tmp_path / "out"
    result = evaluate_refused(
        "--models", str(tmp_path / "bad.py"), "--dataset", "cifar10", "--data-root", str(cifar),
        "--corruptions", "fog", "--severities", "1", "--out", str(out),
    )  # fmt: skip
    line = assert_refused(result, *(message if isinstance(message, tuple) else (message,)))
    assert "head" not in line or case in ("another linear runs last", "head names a conv")  # advice only where it helps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


def test_a_checkpoint_that_does_not_load_is_named(tmp_path):
    snapshot = tmp_path / "run"
    assert run_cli("compute", "--preset", "tiny", "--methods", "dense", "--checkpoints", "--out", str(snapshot),
                   "--quiet").returncode == 0  # fmt: skip
    (snapshot / schema.CHECKPOINTS_DIR / "dense-s0.pt").write_bytes(b"not a checkpoint")
    result = evaluate_refused("--models", str(snapshot), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "dense-s0.pt does not load" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_folder_of_checkpoints_with_a_manifest(cifar, tmp_path):
    """Conv-4 checkpoints saved as state dicts: one dense, one pruned with torch.nn.utils.prune
    (its state dict holds weight_orig and weight_mask), described by models.json."""
    from torch.nn.utils import prune

    from compute import models

    folder = tmp_path / "ckpts"
    folder.mkdir()
    torch.manual_seed(0)
    spec = models.ModelSpec("conv4", 10, (0.5,) * 3, (0.25,) * 3)
    dense = models.build(spec)
    pruned = models.build(spec)
    pruned.load_state_dict(dense.state_dict())
    convs = [(m, "weight") for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=0.5)
    torch.save(dense.state_dict(), folder / "dense.pt")
    torch.save(pruned.state_dict(), folder / "pruned.pt")
    assert any(k.endswith("weight_orig") for k in pruned.state_dict())
    (folder / "models.json").write_text(json.dumps({
        "architecture": "conv4", "num_classes": 10,
        "models": [
            {"model_id": "conv4-dense", "checkpoint": "dense.pt"},
            {"model_id": "conv4-half", "checkpoint": "pruned.pt", "method": "torch_l1", "parent_id": "conv4-dense"},
        ],
    }))  # fmt: skip
    out = tmp_path / "out"
    result = evaluate(
        "--models", str(folder), "--dataset", "cifar10", "--data-root", str(cifar), "--corruptions", "fog",
        "--severities", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pl.read_parquet(out / schema.MODELS)
    conv_weights = sum(m.weight.numel() for m in dense.modules() if isinstance(m, nn.Conv2d))
    all_weights = sum(m.weight.numel() for m in dense.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    half = table.filter(pl.col("model_id") == "conv4-half").row(0, named=True)
    assert half["sparsity"] == pytest.approx(round(0.5 * conv_weights) / all_weights, rel=1e-5)
    data = load(DataSpec("cifar10", n_test=0, n_train=0, root=str(cifar)))
    with torch.no_grad():
        logits = pruned.eval()(data.test_images.float() / 255)
    rows = scan_metrics(out).filter((pl.col("model_id") == "conv4-half") & (pl.col("condition_id") == 0))
    assert rows.collect().sort("sample_id")["pred"].to_list() == logits.argmax(1).tolist()

    (folder / "pruned.pt").write_bytes(b"garbage")
    result = evaluate_refused(
        "--models", str(folder), "--dataset", "cifar10", "--data-root", str(cifar), "--out", str(tmp_path / "again")
    )
    assert result.returncode == 2 and "pruned.pt does not load into conv4" in result.stderr


def test_a_module_function_source(cifar, tmp_path):
    # package.module:function, imported from the working folder (here the repository)
    out = tmp_path / "mod"
    result = evaluate(
        "--models", "examples.my_models:models", "--dataset", "cifar10", "--data-root", str(cifar),
        "--corruptions", "fog", "--severities", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 models" in result.stdout
    bad = evaluate_refused("--models", "examples.my_models:nothing", "--dataset", "cifar10", "--data-root", str(cifar),
                           "--out", str(tmp_path / "bad"))  # fmt: skip
    assert bad.returncode == 2 and "has no function 'nothing'" in bad.stderr


def test_evaluate_needs_only_the_test_folder_of_an_image_folder(tmp_path):
    from tests.test_data import write_image_folder

    write_image_folder(tmp_path / "test", [str(c) for c in range(10)], 2, size=(32, 32))
    out = tmp_path / "out"
    result = evaluate(
        "--models", str(EXAMPLE), "--dataset", "imagefolder", "--test-root", str(tmp_path / "test"),
        "--corruptions", "fog", "--severities", "1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "x 2 conditions x 20 samples" in result.stdout
    train = run_cli(
        "compute", "--preset", "tiny", "--dataset", "imagefolder", "--test-root", str(tmp_path / "test"),
        "--out", str(tmp_path / "c"), "--quiet",
    )  # fmt: skip
    assert train.returncode == 2 and "no training images" in train.stderr and not (tmp_path / "c").exists()
    assert not (tmp_path / ".c.work").exists()


def test_a_misnamed_head_is_one_line(cifar, tmp_path):
    (tmp_path / "m.py").write_text(
        "from torch import nn\ndef models():\n"
        "    return [{'model_id': 'h', 'model': nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), 'head': 'fc'}]\n"
    )
    result = evaluate_refused("--models", str(tmp_path / "m.py"), "--dataset", "cifar10", "--data-root", str(cifar),
                              "--out", str(tmp_path / "o"))  # fmt: skip
    assert result.returncode == 2 and "no layer named 'fc'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


NET = "from torch import nn\ndef net(width=10):\n    return nn.Sequential(nn.Flatten(), nn.Linear(3072, width))\n"
ROLE_CASES = {
    "target above 1": (
        "def models():\n    return [{'model_id': 'd', 'model': net()},\n"
        "            {'model_id': 'p', 'model': net(), 'parent_id': 'd', 'target_sparsity': 1.7}]\n",
        "p's target_sparsity 1.7 is not allowed; it must be between 0 and 1",
    ),
    "target NaN": (
        "def models():\n    return [{'model_id': 'd', 'model': net()},\n"
        "            {'model_id': 'p', 'model': net(), 'parent_id': 'd', 'target_sparsity': float('nan')}]\n",
        "p's target_sparsity nan is not allowed",
    ),
    "cycle": (
        "def models():\n    return [{'model_id': 'a', 'model': net(), 'parent_id': 'b'},\n"
        "            {'model_id': 'b', 'model': net(), 'parent_id': 'a'}]\n",
        "a's parent b is not a dense model (its parent is a)",
    ),
    "chain": (
        "def models():\n    return [{'model_id': 'a', 'model': net()},\n"
        "            {'model_id': 'b', 'model': net(), 'parent_id': 'a'},\n"
        "            {'model_id': 'c', 'model': net(), 'parent_id': 'b'}]\n",
        "c's parent b is not a dense model (its parent is a)",
    ),
    "larger than its parent": (
        "def models():\n    return [{'model_id': 'd', 'model': net()}, {'model_id': 'big', 'model': nn.Sequential("
        "nn.Flatten(), nn.Linear(3072, 64), nn.ReLU(), nn.Linear(64, 10)), 'parent_id': 'd'}]\n",
        "big has 197,248 nonzero conv and linear weights, more than its parent d has (30,720)",
    ),
}


@pytest.mark.parametrize("case", list(ROLE_CASES))
def test_roles_validate_would_reject_are_refused_up_front(tmp_path, case):
    source, message = ROLE_CASES[case]
    (tmp_path / "bad.py").write_text(NET + source)
    result = run_cli_here("evaluate", "--models", str(tmp_path / "bad.py"), "--out", str(tmp_path / "out"))
    line = assert_refused(result, *(message if isinstance(message, tuple) else (message,)))
    assert "head" not in line or case in ("another linear runs last", "head names a conv")  # advice only where it helps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]


def test_a_checkpoint_folder_a_user_gets_wrong_is_one_line_that_says_what_to_do(tmp_path):
    from compute import models

    folder = tmp_path / "ckpts"
    folder.mkdir()
    spec = models.ModelSpec("conv4", 10, (0.5,) * 3, (0.25,) * 3)
    state = models.build(spec).state_dict()
    plain = {k: v for k, v in state.items() if not k.endswith("weight_mask")}  # a state dict of plain torch
    torch.save(plain, folder / "plain.pt")
    torch.save(state, folder / "whole.pt")
    cases = {
        "no manifest": (None, "holds no models.json"),
        "bad json": ("{architecture: conv4", "is not valid JSON"),
        "no models": ({"architecture": "conv4", "num_classes": 10}, "lacks 'models'"),
        "no masks": (
            {"architecture": "conv4", "num_classes": 10, "models": [{"model_id": "p", "checkpoint": "plain.pt"}]},
            "plain.pt lacks prunescope's weight_mask buffers (",
        ),
        "classes": (
            {"architecture": "conv4", "num_classes": 100, "models": [{"model_id": "w", "checkpoint": "whole.pt"}]},
            "says num_classes 100, but whole.pt's classifier has 10 outputs",
        ),
    }
    for case, (manifest, message) in cases.items():
        (folder / "models.json").unlink(missing_ok=True)
        if manifest is not None:
            (folder / "models.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
        result = run_cli_here("evaluate", "--models", str(folder), "--out", str(tmp_path / "out"))
        line = result.stderr.strip()
        assert result.returncode == 2 and len(line.splitlines()) == 1 and message in line, (case, line)
    assert not (tmp_path / "out").exists()


def test_a_models_source_that_is_not_there_or_returns_a_dict_is_one_line(tmp_path):
    result = run_cli_here("evaluate", "--models", str(tmp_path / "no_such_folder"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no_such_folder does not exist" in result.stderr, result.stderr
    assert "ModuleNotFoundError" not in result.stderr
    (tmp_path / "d.py").write_text(
        "from torch import nn\ndef models():\n    return {'a': nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))}\n"
    )
    result = run_cli_here("evaluate", "--models", str(tmp_path / "d.py"), "--out", str(tmp_path / "out"))
    line = result.stderr.strip()
    assert result.returncode == 2 and len(line.splitlines()) == 1 and "(got a dict with keys a)" in line, line
