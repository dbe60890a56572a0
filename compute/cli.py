"""The `prunescope` command line. Torch loads only inside `prunescope compute`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from compute.config import (
    EVALUATE_DEFAULTS,
    EVALUATE_FIELDS,
    InputError,
    StoppedShort,
    add_config_flags,
    apply_overrides,
)
from compute.presets import PRESETS, get_preset

#: arguments of how a command runs, not of what it computes
RUN_ARGS = ("out", "overwrite", "quiet", "add_to", "replace", "dry_run", "jobs")
DEFAULT_PRESET = "demo"


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message on a bad flag; we print one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_growth_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--add-to", metavar="SNAPSHOT",
        help=f"add {what} to this snapshot: --out gets a snapshot of all its models and the new ones",
    )  # fmt: skip
    parser.add_argument("--replace", action="store_true", help="with --add-to: recompute models it already holds")


def preset_given(argv: list[str]) -> str:
    """The --preset of a `compute` command line, read before the parser is built so that its
    --help shows that preset's defaults (wherever --help stands)."""
    if argv[:1] != ["compute"]:
        return DEFAULT_PRESET
    pre = OneLineParser(prog="prunescope compute", add_help=False)
    pre.add_argument("--preset", default=DEFAULT_PRESET)
    return pre.parse_known_args(argv[1:])[0].preset


def build_parser(preset: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """The command line; `compute --help` shows the defaults of `preset` (ConfigError if there is none)."""
    defaults = get_preset(preset)
    parser = OneLineParser(prog="prunescope", description="What did pruning do to my network?")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    compute = sub.add_parser(
        "compute",
        help="train, prune, corrupt and evaluate; write a snapshot",
        description="Train a dense model, prune it with each method at each sparsity, evaluate every "
        f"model on clean and corrupted test images and write a snapshot folder. The defaults shown are the {preset} "
        "preset's; --preset NAME --help shows another's.",
    )
    compute.add_argument(
        "--preset", default=DEFAULT_PRESET,
        help=f"named configuration ({', '.join(PRESETS)}) that the flags below change (default: {DEFAULT_PRESET})",
    )  # fmt: skip
    compute.add_argument("--out", help="snapshot folder to write (required unless --dry-run)")
    compute.add_argument("--overwrite", action="store_true", help="replace an existing snapshot at --out")
    compute.add_argument("--quiet", action="store_true", help="no progress bars, only the summary line")
    compute.add_argument(
        "--dry-run", action="store_true",
        help="print the plan: models, epochs per method, rows, snapshot size and the time estimated from a "
        "short calibration on the device; train and write nothing",
    )  # fmt: skip
    compute.add_argument(
        "--jobs", default="1", metavar="N",
        help="run the sweep's (seed, method) jobs in N worker processes on the one device, then merge them "
        "(auto: as many as the GPU's memory holds, 1 on a CPU; default 1)",
    )  # fmt: skip
    add_growth_flags(compute, "new methods or sparsities of the sweep that wrote it")
    add_config_flags(compute, defaults=defaults, label=f"{preset} preset")

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate your own models (a Python models file, or a snapshot's checkpoints); write a snapshot",
        description="Evaluate the models a source gives on clean and corrupted test images and write a snapshot. "
        "SOURCE is a Python file or module with a function returning the models (file.py, file.py:function, "
        "package.module:function) or a snapshot folder written with --checkpoints.",
    )
    evaluate.add_argument("--models", required=True, metavar="SOURCE", help="where the models come from")
    evaluate.add_argument("--out", required=True, help="snapshot folder to write")
    evaluate.add_argument("--overwrite", action="store_true", help="replace the snapshot at --out")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars, only the summary line")
    add_growth_flags(evaluate, "the given models")
    add_config_flags(evaluate, only=EVALUATE_FIELDS, defaults=EVALUATE_DEFAULTS)

    validate = sub.add_parser("validate", help="check a snapshot's schema and invariants (exit 0, 1 or 2)")
    validate.add_argument("path", help="snapshot folder")

    merge = sub.add_parser(
        "merge",
        help="combine the shards of one sweep (compute --shard K/N) into one snapshot",
        description="Combine shard snapshots 1/N..N/N of one configuration into one snapshot (no torch needed).",
    )
    merge.add_argument("parts", nargs="+", help="the shard snapshot folders")
    merge.add_argument("--out", required=True, help="snapshot folder to write")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing snapshot at --out")

    synth = sub.add_parser(
        "synth",
        help="a synthetic snapshot of any size, for scale tests of the app",
        description="Write a valid snapshot of random models and samples (no training) with all 96 conditions.",
    )
    synth.add_argument("--models", type=int, required=True, help="number of models (dense and pruned)")
    synth.add_argument("--samples", type=int, required=True, help="number of test samples")
    synth.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--metric-bits", type=int, default=23, help="mantissa bits kept of each float metric, as compute's (default 23)"
    )
    synth.add_argument("--out", required=True, help="snapshot folder to write")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing snapshot at --out")
    synth.add_argument("--quiet", action="store_true", help="no progress bar, only the summary line")

    app = sub.add_parser("app", help="open the dashboard (streamlit run app.py)")
    app.add_argument("--data", help="data root holding snapshot folders (default: $PRUNESCOPE_DATA or data/)")
    app.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    return parser


def cmd_compute(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "preset", *RUN_ARGS)}
    if args.jobs != "1" and args.add_to:
        return refuse("compute", "--jobs runs a whole sweep; drop --add-to, or --jobs")
    if args.dry_run and args.add_to:
        return refuse("compute", "--dry-run plans a whole sweep; drop --add-to (or plan the grown sweep's flags)")
    if not args.dry_run and args.out is None:
        return refuse("compute", "the following arguments are required: --out")

    def work() -> str:
        cfg = apply_overrides(get_preset(args.preset), given)
        if args.dry_run:
            from compute.pipeline import dry_run

            return "\n".join(dry_run(cfg, args.out, args.overwrite, args.preset, args.jobs))
        if args.jobs != "1":
            from compute.pipeline import run_in_workers

            return run_in_workers(cfg, args.out, args.overwrite, args.jobs, not args.quiet)
        from compute.pipeline import run

        summary = run(cfg, args.out, args.overwrite, not args.quiet, args.add_to, args.replace)
        return "\n".join([summary.line(), *(f"note: {note}" for note in summary.notes())])

    return report("compute", work)


def cmd_evaluate(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("command", "models", *RUN_ARGS)}

    def work() -> str:
        cfg = apply_overrides(EVALUATE_DEFAULTS, given)
        from compute.pipeline import run_given

        summary = run_given(cfg, args.models, args.out, args.overwrite, not args.quiet, args.add_to, args.replace)
        return "\n".join([summary.line(), *(f"note: {note}" for note in summary.notes())])

    return report("evaluate", work)


def cmd_merge(args: argparse.Namespace) -> int:
    from compute.merge import run

    return report("merge", lambda: run(args.parts, args.out, args.overwrite))


def cmd_synth(args: argparse.Namespace) -> int:
    from compute.synth import SynthSpec, run

    spec = SynthSpec(args.models, args.samples, args.classes, args.seed, args.metric_bits)
    return report("synth", lambda: run(spec, args.out, args.overwrite, not args.quiet))


def refuse(command: str, message: str) -> int:
    print(f"prunescope {command}: error: {message}", file=sys.stderr)
    return 2


def report(command: str, work) -> int:
    """Run `work` (it returns the summary line) and print its line; on bad input print one
    error line instead and exit 2."""
    from compute.snapshot import SnapshotError

    try:
        line = work()
    except (InputError, SnapshotError, FileExistsError) as err:
        print(f"prunescope {command}: error: {err}", file=sys.stderr)
        return 2
    except StoppedShort as err:
        print(f"prunescope {command}: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a path that cannot be written or read: disk full, permissions, a vanished folder
        where = f": {err.filename}" if err.filename else ""
        print(f"prunescope {command}: error: {err.strerror or err}{where}; check that path and its permissions",
              file=sys.stderr)  # fmt: skip
        return 2
    except KeyboardInterrupt as err:  # compute's Interrupted says how far it got; a bare one came before any model
        text = str(err) or "interrupted before any model was evaluated; run the same command to continue"
        print(f"prunescope {command}: {text}", file=sys.stderr)
        return 130
    for text in line.splitlines():
        print(f"prunescope {command}: {text}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    app = Path(__file__).resolve().parent.parent / "app.py"
    if not app.is_file():
        print(f"prunescope app: error: {app} not found; run from a source checkout (pip install -e .)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.data:
        env["PRUNESCOPE_DATA"] = str(Path(args.data).resolve())
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port)]
    return subprocess.call(command, env=env, cwd=app.parent)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser(preset_given(argv))
    except InputError as err:  # an unknown --preset, even with --help
        print(f"prunescope compute: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command == "compute":
        return cmd_compute(args)
    if args.command == "merge":
        return cmd_merge(args)
    if args.command == "evaluate":
        return cmd_evaluate(args)
    if args.command == "synth":
        return cmd_synth(args)
    if args.command == "validate":
        from compute.validate import main as validate_main

        return validate_main(args.path)
    return cmd_app(args)


if __name__ == "__main__":
    sys.exit(main())
