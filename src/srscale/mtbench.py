"""MT-Bench command line: ``python -m srscale.mtbench summarize JUDGMENTS.jsonl [--model M ...]``.

Prints, per model, the turn-1, turn-2 and overall means FastChat's ``show_result.py --mode single``
computes (ratings of -1 dropped), counts of scored and missing judgments, and per-category means.
The logic lives in :mod:`srscale.evaluation.mtbench`.
"""

from __future__ import annotations

import argparse
import sys

from srscale.errors import SrscaleError
from srscale.evaluation import mtbench


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m srscale.mtbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="score table of a FastChat model_judgment/<judge>_single.jsonl file")
    s.add_argument("judgments", help="FastChat single-grading judgment file (jsonl)")
    s.add_argument("--model", nargs="+", default=None, help="only these models")
    s.add_argument(
        "--question-file",
        default=None,
        help="FastChat question.jsonl for the categories (default: the official MT-Bench question ids)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "summarize":
            questions = mtbench.load_questions(args.question_file) if args.question_file else None
            summary = mtbench.summarize_file(args.judgments, questions=questions, models=args.model)
            if args.model and not summary:
                raise SrscaleError(f"MT-Bench: no judgments of {', '.join(args.model)} in {args.judgments}")
            print(mtbench.format_table(summary, title=f"MT-Bench single-answer grading: {args.judgments}"))
    except SrscaleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
