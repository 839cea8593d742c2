"""`nslm gui`: serve the web app on 127.0.0.1 and print its address."""

from __future__ import annotations

from nslm.cli import HelpFormatter
from nslm.errors import NslmError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gui",
        help="open the web app: pick a model, train, tell stories, rate them",
        description="Serve the nslm web app (Gradio) and print its address. It lists the models shipped with\n"
                    "nslm and those in the runs folder, starts and watches training runs, tells stories as\n"
                    "they are generated, compares two models and saves ratings.",
        epilog="example:\n  nslm gui --runs-dir runs --data data/tinystories --port 7860",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind: 127.0.0.1 is this machine only, 0.0.0.0 opens the app to the network")
    parser.add_argument("--port", type=int, default=None, help="port (none given: 7860, or the next free one)")
    parser.add_argument("--runs-dir", default="runs", help="folder of training runs")
    parser.add_argument("--data", default="data/tinystories",
                        help="default data folder for new runs and the novelty index")
    parser.add_argument("--db", default=None,
                        help="ratings database (none given: $NSLM_HOME/ratings.sqlite, NSLM_HOME defaults to ~/.nslm)")
    parser.add_argument("--reports-dir", default="reports", help="folder of evaluation reports")
    parser.add_argument("--sweeps-dir", default="sweeps", help="folder of sweeps (nslm sweep run --out) for the Sweeps tab")
    parser.add_argument("--build-index", action="store_true",
                        help="build the novelty index of --data in the background (at a low priority) when it has\n"
                             "none of all its training stories; the closest-story panel works from its first stories on")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.port is not None and not 1 <= args.port <= 65535:
        raise NslmError(f"--port must be between 1 and 65535, not {args.port}")
    # gradio: imported when the app starts, after the arguments are checked, never for `nslm --help`
    from nslm.gui.app import build_app, launch
    from nslm.device import blas_on_one_thread

    blas_on_one_thread()  # stories are decoded in worker threads, where OpenBLAS may not take a limit

    app = build_app(runs_dir=args.runs_dir, data_dir=args.data, db_path=args.db, reports_dir=args.reports_dir,
                    sweeps_dir=args.sweeps_dir)
    try:
        url = launch(app, host=args.host, port=args.port)
    except OSError as exc:
        raise NslmError(f"cannot serve on {args.host}:{args.port or 7860} ({exc}); pick another --port") from None
    print(f"nslm gui: open {url} in your browser (Ctrl-C to stop)", flush=True)
    context = app.nslm_context
    if args.build_index and context.evaluations is not None:
        print(context.evaluations.build_index_at_start(context.data_dir), flush=True)
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        app.close()
    return 0
