"""``python -m srscale.analysis report --experiment NAME --out DIR [--tracking-uri URI] [--no-log]``

Writes the study's figures (PNG), tables (CSV) and ``report.md`` / ``report.html`` to DIR and logs
the folder to MLflow as a run tagged ``srscale.report=1``.

``python -m srscale.analysis alpaca-eval ANNOTATIONS.json [...]`` prints AlpacaEval's metrics (win rate,
standard error, discrete win rate, length-controlled win rate where its inputs are there) for
annotation files in AlpacaEval's own format, computed by the ``alpaca_eval`` package.

User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srscale.errors import SrscaleError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m srscale.analysis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="figures, tables and a one-page report of a study, logged to MLflow")
    rep.add_argument("--experiment", required=True, help="the sweep's tracking.experiment")
    rep.add_argument("--out", required=True, type=Path, help="folder for the PNGs, CSVs and report.md/.html")
    rep.add_argument("--tracking-uri", default=None,
                     help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    rep.add_argument("--no-log", action="store_true", help="write the folder only; log nothing to MLflow")
    ae = sub.add_parser("alpaca-eval", help="AlpacaEval metrics of annotation files in AlpacaEval's format")
    ae.add_argument("annotations", nargs="+", type=Path, help="annotations.json files (one per model)")
    ae.add_argument("--no-length-control", action="store_true",
                    help="skip the length-controlled win rate (it needs AlpacaEval's hub files)")
    return parser


def _report(args: argparse.Namespace) -> None:
    from srscale.analysis.report import make_report

    report = make_report(args.tracking_uri, args.experiment, args.out, log=not args.no_log)
    print(f"report: {report.markdown} ({len(report.figures)} figures"
          + (f"; no data for {', '.join(report.missing)}" if report.missing else "") + ")")
    if report.run_id:
        print(f"logged to MLflow run {report.run_id} (tag srscale.report=1)")


def _alpaca_eval(args: argparse.Namespace) -> None:
    from srscale.evaluation.alpacaeval import read_annotations, winrate_metrics

    for path in args.annotations:
        metrics = winrate_metrics(read_annotations(path), length_controlled=not args.no_length_control)
        print(json.dumps({"file": str(path), **metrics}))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        {"report": _report, "alpaca-eval": _alpaca_eval}[args.command](args)
    except SrscaleError as err:
        print(f"srscale: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
