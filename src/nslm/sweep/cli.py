"""`nslm sweep run | worker | report`: studies of many trainings, resumable and shared through Optuna."""

from __future__ import annotations

import sys
from pathlib import Path

from nslm.cli import HelpFormatter, positive_int
from nslm.errors import NslmError, what_is_there

EXAMPLE = """examples:
  nslm sweep run studies/positional.toml --out sweeps/positional        # run (or continue) every trial
  nslm sweep worker sweeps/positional                                     # a second process on the same sweep
  nslm sweep worker --storage postgresql://host/db --study positional     # a worker on another machine
  nslm sweep report sweeps/positional                                     # tables and plots in sweeps/positional/report
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a study of many trainings and compare them",
                              description="Run the trials of a sweep spec (a grid, or a TPE search) as ordinary "
                              "run folders under one sweep folder, with their study in Optuna; continue it after "
                              "a stop, share it between workers, and report tables and plots.",
                              epilog=EXAMPLE, formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="sweep_command", metavar="STEP", required=True)

    r = sub.add_parser("run", help="start or continue a sweep", epilog=EXAMPLE, formatter_class=HelpFormatter,
                       description="Check the spec, create the sweep folder and its study (or join it), and run "
                       "trials until none is left. Rerun the same command to continue a stopped sweep.")
    r.add_argument("spec", type=Path, help="sweep spec, a TOML file (see studies/*.toml)")
    r.add_argument("--out", required=True, type=Path, help="sweep folder")
    r.add_argument("--storage", help="Optuna database URL for the study (default: sqlite in the sweep folder)")
    r.add_argument("--study", help="study name in --storage (default: nslm-sweep)")
    r.add_argument("--max-trials", type=positive_int, metavar="N", help="run at most N trials in this process")
    r.set_defaults(func=run_sweep)

    w = sub.add_parser("worker", help="run trials of an existing sweep", epilog=EXAMPLE, formatter_class=HelpFormatter,
                       description="Join a sweep made by `nslm sweep run` and run its next trials: give the sweep "
                       "folder, or --storage (and --study) for a study whose folder is on another machine.")
    w.add_argument("sweep", nargs="?", type=Path, help="sweep folder (or give --storage)")
    w.add_argument("--storage", help="Optuna database URL of the study")
    w.add_argument("--study", help="study name in --storage (default: its only study)")
    w.add_argument("--out", type=Path, help="where this worker's trial folders go (default: the sweep folder)")
    w.add_argument("--data", type=Path, help="this machine's copy of the spec's data folder")
    w.add_argument("--max-trials", type=positive_int, metavar="N", help="run at most N trials in this process")
    w.set_defaults(func=run_worker)

    rep = sub.add_parser("report", help="tables and plots of a sweep", epilog=EXAMPLE, formatter_class=HelpFormatter,
                         description="Write report.md, CSV tables and PNG plots of a sweep's finished trials.")
    rep.add_argument("sweep", type=Path, help="sweep folder")
    rep.add_argument("--out", type=Path, help="report folder (default: SWEEP/report)")
    rep.set_defaults(func=run_report)


def _work(study, spec, out: Path, max_trials: int | None, again: str) -> int:
    from nslm.sweep.runner import SweepStopped, work  # optuna and torch: only when a sweep runs

    try:
        ran = work(study, spec, out, max_trials)
    except (SweepStopped, KeyboardInterrupt):
        print(f"stopped; the cut trial is queued again. Continue with: {again}", file=sys.stderr)
        return 130
    print(f"this worker ran {ran} trial{'s' * (ran != 1)}; report with: nslm sweep report {out}", file=sys.stderr)
    return 0


def run_sweep(args) -> int:
    from nslm.sweep.runner import create_sweep  # optuna and torch: only when a sweep runs
    from nslm.sweep.spec import read_spec

    spec = read_spec(args.spec)
    study = create_sweep(args.spec, spec, args.out, args.storage, args.study)
    return _work(study, spec, args.out, args.max_trials, f"nslm sweep run {args.spec} --out {args.out}")


def run_worker(args) -> int:
    from nslm.sweep.runner import check_writable, load_study, read_sweep, study_spec  # optuna: only when a sweep runs

    if (args.sweep is None) == (args.storage is None):
        raise NslmError("give either the sweep folder or --storage URL (with --study NAME when it holds several)")
    if args.sweep is not None:
        record = read_sweep(args.sweep)
        storage, name, out = record["storage"], record["study"], args.out or args.sweep
    else:
        storage, name, out = args.storage, args.study, args.out
    study = load_study(storage, name)
    spec = study_spec(study)
    if args.data is not None:
        if "data" in spec.varied:
            raise NslmError("this sweep varies its data folder, so --data cannot replace it; give the same paths here")
        if not args.data.is_dir():
            raise NslmError(f"data folder {args.data} {what_is_there(args.data)}; give this machine's copy of {spec.data}")
        spec.data = str(args.data.resolve())
    out = Path(out or study.user_attrs["out"])
    check_writable(out)
    study = load_study(storage, study.study_name, spec)
    again = f"nslm sweep worker {args.sweep}" if args.sweep else f"nslm sweep worker --storage {storage} --study {study.study_name}"
    return _work(study, spec, out, args.max_trials, again)


def run_report(args) -> int:
    from nslm.sweep.report import write_report  # matplotlib and optuna: only when a report is written
    from nslm.sweep.runner import check_writable, open_sweep, read_sweep

    read_sweep(args.sweep)
    out = args.out or args.sweep / "report"
    check_writable(out)
    study, spec = open_sweep(args.sweep)
    data = write_report(study, spec, out, title=args.sweep.name)
    best = data["trials"][0]
    shown = ", ".join(f"{k}={best[k]}" for k in spec.varied)
    print(f"wrote {out}: {len(data['trials'])} trials, {len(data['runs'])} runs; best {shown} at "
          f"{best['select_bpb']:.4f} bits per byte on the selection split", file=sys.stderr)
    return 0
