"""The command line end to end, as a user runs it."""

import dataclasses
import json
import re

import polars as pl
import pytest

from compute import schema
from tests.conftest import relu_rates_by_hooks, run_cli, run_cli_here


def test_compute_writes_a_valid_snapshot_and_says_so(tiny_snapshot):
    manifest = json.loads((tiny_snapshot / schema.MANIFEST).read_text())
    assert manifest["complete"] is True and manifest["schema_version"] == schema.SCHEMA_VERSION
    assert manifest["config"]["sparsities"] == [0.5, 0.9]
    assert set(manifest["timings"]) >= {"train_and_prune", "evaluate", "total"}
    result = run_cli("validate", str(tiny_snapshot))
    assert result.returncode == 0, result.stdout
    models = pl.read_parquet(tiny_snapshot / schema.MODELS)
    assert sorted(models["method"].unique()) == ["dense", "magnitude", "random"]
    pruned = models.filter(pl.col("method") != "dense")
    # measured sparsity of the prunable layers matches the target (exact for one-shot global selection)
    assert (pruned["sparsity"] - pruned["target_sparsity"]).abs().max() < 0.005
    dense = models.filter(pl.col("method") == "dense")
    assert (pruned["params_nonzero"] < dense["params_nonzero"][0]).all()
    assert (pruned["flops"] < dense["flops"][0]).all()
    assert (pruned["params_total"] == dense["params_total"][0]).all()


def test_summary_line_reports_the_work(tmp_path):
    out = tmp_path / "s"
    result = run_cli(
        "compute",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--quiet",
        "--methods",
        "dense,magnitude",
        "--sparsities",
        "0.8",
        "--corruptions",
        "contrast",
        "--severities",
        "2",
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("prunescope compute: wrote") and "2 models x 2 conditions x 60 samples" in line
    assert " s on cpu" in line


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--sparsities", "0.5,1.5"], ["--sparsities", "1.5", "[0, 1)"]),
        (["--methods", "dense,nope"], ["--methods", "nope", "magnitude"]),
        (["--corruptions", "rain"], ["--corruptions", "rain", "contrast"]),
        (["--severities", "6"], ["--severities", "6", "1,2,3,4,5"]),
        (["--preset", "huge"], ["--preset", "huge", "demo"]),
        (["--device", "tpu"], ["--device", "tpu", "cpu"]),
        (["--epochs", "zero"], ["--epochs", "zero"]),
        (["--dataset", "cifar10"], ["--data-root"]),
        (["--allocation", "best"], ["--allocation", "best", "erk"]),
        (["--imp-rate", "1.5"], ["--imp-rate", "1.5", "between 0 and 1"]),
        (["--supermask-init", "zeros"], ["--supermask-init", "zeros", "signed_constant"]),
        (["--lr", "inf"], ["--lr", "inf", "finite"]),
        (["--finetune-lr", "nan"], ["--finetune-lr", "nan", "finite"]),
        (["--epochs", "-3"], ["--epochs", "-3", "at least 1"]),
        (["--batch-size", "-1"], ["--batch-size", "-1", "at least 1"]),
        (["--weight-decay", "-0.1"], ["--weight-decay", "0 or more"]),
        (["--sparsities", "0.5,0.5"], ["--sparsities", "0.5", "twice"]),
        (["--severities", "1,1"], ["--severities", "1", "twice"]),
        (["--corruptions", "fog,fog"], ["--corruptions", "fog", "twice"]),
        (["--sparsities", "0.90001,0.9"], ["--sparsities", "0.90001", "0.9", "same models"]),
        (["--rewind-epochs", "99"], ["--rewind-epochs", "99", "below --epochs"]),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, flags, names):
    out = tmp_path / "never"
    result = run_cli_here("compute", "--preset", "tiny", "--out", str(out), *flags)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for name in names:
        assert name in message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_snapshot_is_not_replaced_without_overwrite(tiny_snapshot):
    before = (tiny_snapshot / schema.MANIFEST).read_text()
    result = run_cli_here("compute", "--preset", "tiny", "--out", str(tiny_snapshot))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (tiny_snapshot / schema.MANIFEST).read_text() == before


def test_flags_override_the_preset():
    from compute.config import apply_overrides
    from compute.presets import get_preset

    cfg = apply_overrides(get_preset("demo"), {"sparsities": "0.3,0.6", "seeds": "2", "augment": False})
    assert cfg.sparsities == (0.3, 0.6) and cfg.seeds == 2 and cfg.augment is False
    assert cfg.epochs == get_preset("demo").epochs


def test_checkpoints_reload_into_models_that_reproduce_the_snapshot(tmp_path):
    """End to end: --checkpoints, then load_model, then the same clean predictions."""
    import torch

    from compute import models
    from compute.checkpoints import load_model
    from compute.data import DataSpec, load
    from compute.snapshot import scan_metrics

    out = tmp_path / "ckpt"
    result = run_cli(
        "compute", "--preset", "tiny", "--out", str(out), "--quiet", "--checkpoints",
        "--methods", "magnitude,l1_filter", "--sparsities", "0.7", "--corruptions", "contrast", "--severities", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert run_cli("validate", str(out)).returncode == 0
    data = load(DataSpec("digits", n_test=60, n_train=300))
    rows = scan_metrics(out).filter(pl.col("condition_id") == 0).sort("sample_id").collect()
    for model_id in ("dense-s0", "magnitude-0.7-s0", "l1_filter-0.7-s0"):
        model = load_model(out, model_id)
        with torch.no_grad():
            pred = model(data.test_images.float() / 255).argmax(1)
        order = torch.argsort(data.test_index)
        expected = rows.filter(pl.col("model_id") == model_id)["pred"].to_list()
        assert pred[order].tolist() == expected, model_id
    pruned = load_model(out, "magnitude-0.7-s0")
    fresh = models.build(models.ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3))
    fresh.load_state_dict(pruned.state_dict())  # an unstructured checkpoint fits an unpruned model as it is
    small = load_model(out, "l1_filter-0.7-s0")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in fresh.parameters())
    check_diagnostics_independently(out, data)


def check_diagnostics_independently(out, data):
    """dead_relu, dist_init, dist_dense and the layer table of a --checkpoints snapshot,
    recomputed from its checkpoints with plain torch: one forward of every clean image, the
    state dicts, and the kept filter indices the manifest records."""
    import torch

    from compute import models
    from compute.checkpoints import load_model

    table = pl.read_parquet(out / schema.MODELS)
    row = {r["model_id"]: r for r in table.iter_rows(named=True)}
    dense = load_model(out, "dense-s0").state_dict()
    torch.manual_seed(0)  # seed 0's dense model at initialisation, built as the sweep builds it
    init = models.build(models.ModelSpec("small_cnn", 10, (0.0,) * 3, (1.0,) * 3)).state_dict()
    weights = [k.removesuffix("_mask") for k in dense if k.endswith("weight_mask")]
    notes = json.loads((out / schema.MANIFEST).read_text())["model_notes"]
    for model_id in ("dense-s0", "magnitude-0.7-s0", "l1_filter-0.7-s0"):
        model = load_model(out, model_id)
        dead, at_zero = relu_rates_by_hooks(model, data.test_images.float() / 255)
        assert row[model_id]["dead_relu"] == pytest.approx(dead, abs=1e-7), model_id
        assert row[model_id]["dynamic_dead_relu"] == pytest.approx(at_zero, abs=1e-7), model_id
        state = model.state_dict()
        kept = notes.get(model_id, {}).get("kept_filters", {})
        if kept:  # body.3's filters removed, and body.6's inputs that read them
            index = torch.tensor(kept["body.3"])
            full3, full6 = torch.zeros_like(dense["body.3.weight"]), torch.zeros_like(dense["body.6.weight"])
            full3[index], full6[:, index] = state["body.3.weight"], state["body.6.weight"]
            state = {**state, "body.3.weight": full3, "body.6.weight": full6}
        for column, reference in (("dist_init", init), ("dist_dense", dense)):
            distance = torch.cat([(state[k].double() - reference[k].double()).flatten() for k in weights]).norm()
            assert row[model_id][column] == pytest.approx(distance.item(), rel=1e-6), (model_id, column)
    layers = pl.read_parquet(out / schema.LAYERS).filter(pl.col("model_id") == "l1_filter-0.7-s0")
    filters = len(notes["l1_filter-0.7-s0"]["kept_filters"]["body.3"])
    assert layers["params"].to_list() == [3 * 16 * 9, 16 * filters * 9, filters * 64 * 9, 64 * 10]  # its real shapes
    assert layers["prunable"].to_list() == [False, True, True, False]  # the first and last layers stay dense


def test_reduced_metric_precision_is_recorded_and_still_validates(tmp_path):
    out = tmp_path / "coarse"
    result = run_cli(
        "compute", "--preset", "tiny", "--out", str(out), "--quiet", "--metric-bits", "10",
        "--methods", "dense", "--corruptions", "contrast", "--severities", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / schema.MANIFEST).read_text())["storage"]["metric_bits"] == 10
    assert run_cli("validate", str(out)).returncode == 0
    import numpy as np

    losses = pl.read_parquet(next((out / schema.METRICS_DIR).glob("*/*.parquet")))["loss"].to_numpy()
    assert np.all(losses.view(np.uint32) & ((1 << 13) - 1) == 0)  # 10 mantissa bits kept


def test_synth_writes_a_valid_snapshot_of_the_requested_size(tmp_path):
    out = tmp_path / "synth"
    result = run_cli("synth", "--models", "5", "--samples", "40", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "5 models x 96 conditions x 40 samples = 19,200 synthetic rows" in result.stdout
    assert run_cli("validate", str(out)).returncode == 0
    models = pl.read_parquet(out / schema.MODELS)
    assert models["method"].to_list()[:2] == ["dense", "random"] and models.height == 5
    assert json.loads((out / schema.MANIFEST).read_text())["synthetic"] is True
    bad = run_cli_here("synth", "--models", "0", "--samples", "40", "--out", str(tmp_path / "never"))
    assert bad.returncode == 2 and "at least 1 model" in bad.stderr


@pytest.mark.parametrize("where", ["a file", "under a file", "the current folder", "the folder above"])
def test_an_unusable_out_gets_one_line_before_any_work(tmp_path, where):
    (tmp_path / "file").write_text("keep")
    (tmp_path / "sub").mkdir()
    out = {
        "a file": tmp_path / "file",
        "under a file": tmp_path / "file" / "snap",
        "the current folder": ".",
        "the folder above": "..",
    }[where]
    for flags in ([], ["--overwrite"]):
        result = run_cli_here("compute", "--preset", "tiny", "--out", str(out), *flags, "--quiet", cwd=tmp_path / "sub")
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "--out" in message and "Traceback" not in message
    assert (tmp_path / "file").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "sub"]


def test_an_unwritable_location_never_ends_in_a_traceback():
    # /proc takes no new folders, not even from root (whom permission bits would not stop)
    for args in (("synth", "--models", "3", "--samples", "10"), ("compute", "--preset", "tiny")):
        result = run_cli_here(*args, "--out", "/proc/prunescope-snapshot", "--quiet")
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message and "/proc" in message


def help_of(monkeypatch, capsys, *argv: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """`prunescope ARGV` (with --help somewhere) in-process: its text and, per option, the label and
    default its help ends with, as in "(demo preset: 0.5,0.9)", and whether it is an on/off switch."""
    from compute.cli import main

    monkeypatch.setenv("COLUMNS", "1000")  # no help line wrapped
    with pytest.raises(SystemExit) as stop:
        main(list(argv))
    assert stop.value.code == 0
    text = capsys.readouterr().out
    entries: list[list[str]] = []  # one per option: "  --flag ..." and its indented help lines
    for line in text.splitlines():
        if line.startswith("  -"):
            entries.append([line])
        elif line.startswith("    ") and entries:
            entries[-1].append(line)
        else:
            entries.append([])
    shown = {}
    for entry in filter(None, entries):
        words = " ".join(entry).split()
        match = re.search(r"\(([\w ]+): (\S+)\)$", " ".join(words))
        if match:
            flag = words[0].rstrip(",")
            switch = words[1] == "--no-" + flag.removeprefix("--")  # "--augment, --no-augment"
            shown[flag] = (match[1], match[2], switch)
    return text, shown


def read_back(command: str, preset: str, shown: dict) -> dict:
    """Type every shown default into the CLI's own parser: the config fields it sets."""
    from compute.cli import build_parser
    from compute.config import FIELDS

    argv = []
    for flag, (_, value, switch) in shown.items():
        if flag.removeprefix("--").replace("-", "_") not in FIELDS:
            continue
        if switch:
            assert value in ("on", "off"), (flag, value)
            argv.append(flag if value == "on" else "--no-" + flag.removeprefix("--"))
        else:
            argv += [flag, value]
    required = ["--out", "x"] if command == "compute" else ["--models", "m.py", "--out", "x"]
    args = vars(build_parser(preset).parse_args([command, *required, *argv]))
    return {name: value for name, value in args.items() if name in FIELDS}


@pytest.mark.parametrize(
    ("argv", "preset"),
    [
        (["compute", "--help"], "demo"),
        (["compute", "--preset", "cifar10", "--help"], "cifar10"),
        (["compute", "--help", "--preset", "cifar10"], "cifar10"),
        (["compute", "--preset=tiny", "--help"], "tiny"),
        (["compute", "--preset", "cifar100", "--help"], "cifar100"),
    ],
)
def test_compute_help_shows_the_defaults_of_the_preset_in_effect_as_typed(monkeypatch, capsys, argv, preset):
    from compute.config import FIELDS, ComputeConfig, apply_overrides, flag_name
    from compute.presets import PRESETS

    text, shown = help_of(monkeypatch, capsys, *argv)
    assert f"The defaults shown are the {preset} preset's" in " ".join(text.split())
    config_flags = {flag: label for flag, (label, _, _) in shown.items() if flag != "--preset"}
    assert config_flags == {flag_name(name): f"{preset} preset" for name in FIELDS}
    given = read_back("compute", preset, shown)
    assert set(given) == set(FIELDS)  # every flag took its shown default
    assert apply_overrides(ComputeConfig(), given) == PRESETS[preset]


def test_evaluate_help_shows_evaluates_own_defaults_as_typed(monkeypatch, capsys):
    from compute.config import EVALUATE_DEFAULTS, EVALUATE_FIELDS, ComputeConfig, apply_overrides, flag_name

    _, shown = help_of(monkeypatch, capsys, "evaluate", "--help")
    assert {flag: label for flag, (label, _, _) in shown.items()} == {
        flag_name(name): "default" for name in EVALUATE_FIELDS
    }
    given = read_back("evaluate", "demo", shown)
    assert set(given) == set(EVALUATE_FIELDS)
    cfg = apply_overrides(ComputeConfig(), given)
    assert {n: getattr(cfg, n) for n in EVALUATE_FIELDS} == {n: getattr(EVALUATE_DEFAULTS, n) for n in EVALUATE_FIELDS}


def test_demo_help_writes_defaults_as_a_user_types_them(monkeypatch, capsys):
    _, shown = help_of(monkeypatch, capsys, "compute", "--help")
    values = {flag: value for flag, (_, value, _) in shown.items()}
    assert values["--sparsities"] == "0.5,0.8,0.9,0.95" and values["--severities"] == "1,2,3,4,5"
    assert values["--methods"] == "all" and values["--corruptions"] == "all"
    assert values["--augment"] == "on" and values["--checkpoints"] == "off"
    assert values["--sparse-epochs"] == "none" and values["--data-root"] == "none"
    assert values["--weight-decay"] == "0.0005" and values["--shard"] == "1/1" and values["--device"] == "auto"


@pytest.mark.parametrize(
    "argv", [["compute", "--help"], ["compute", "--preset", "cifar10", "--help"], ["evaluate", "--help"]]
)
def test_help_prints_no_python_values(monkeypatch, capsys, argv):
    text, shown = help_of(monkeypatch, capsys, *argv)
    assert "None" not in text and "preset default" not in text
    assert not re.search(r"\((?:'|\d+(?:\.\d+)?, )", text), "a Python tuple in the help"
    for _, value, _ in shown.values():
        assert not re.search(r"[()\[\]'\"]|, ", value), value


def test_demo_and_cifar10_help_differ_where_the_presets_do(monkeypatch, capsys):
    from compute.config import flag_name
    from compute.presets import PRESETS

    _, demo = help_of(monkeypatch, capsys, "compute", "--help")
    _, cifar10 = help_of(monkeypatch, capsys, "compute", "--preset", "cifar10", "--help")
    differ = {flag for flag in demo if flag != "--preset" and demo[flag][1] != cifar10[flag][1]}
    a, b = PRESETS["demo"], PRESETS["cifar10"]
    expected = {flag_name(f.name) for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}
    assert differ == expected and {"--epochs", "--dataset", "--architecture"} <= differ


def test_an_unknown_preset_with_help_is_one_error_line():
    result = run_cli("compute", "--preset", "huge", "--help")
    assert result.returncode == 2 and result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith("prunescope compute: error:") and all(s in message for s in ("--preset", "huge", "demo"))


def test_switches_and_unset_fields_read_back_from_text():
    from compute.config import ConfigError, apply_overrides
    from compute.presets import get_preset

    cfg = apply_overrides(get_preset("tiny"), {"augment": "off", "checkpoints": "on", "sparse_epochs": "none"})
    assert cfg.augment is False and cfg.checkpoints is True and cfg.sparse_epochs is None
    with pytest.raises(ConfigError, match="--augment"):
        apply_overrides(get_preset("tiny"), {"augment": "yes"})


def test_an_interrupt_before_any_model_says_so(monkeypatch, tmp_path):
    from compute import cli

    def interrupted():
        raise KeyboardInterrupt

    out = []
    monkeypatch.setattr("sys.stderr", type("E", (), {"write": lambda self, t: out.append(t), "flush": lambda s: 0})())
    assert cli.report("evaluate", interrupted) == 130
    line = "".join(out).strip()
    assert line == "prunescope evaluate: interrupted before any model was evaluated; run the same command to continue"
