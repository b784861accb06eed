"""Loaders for srscale's local lm-eval tasks: read benchmark files under ``data_dir`` into the documents
lm-eval's built-in tasks see after loading their hub datasets (same field names and types).

The YAMLs call these through ``custom_dataset`` with ``dataset_kwargs`` (which benchmark, which MMLU
subject) and the task metadata (``data_dir``, given to ``TaskManager(metadata=...)``). ``LAYOUT`` is the one
table of which files each benchmark reads, relative to ``data_dir``.
"""

from __future__ import annotations

import bz2
import csv
import json
import re
from pathlib import Path
from typing import Any

import datasets

from srscale.errors import SrscaleError

# benchmark -> files it reads under data_dir ("<subject>" stands for each MMLU subject)
LAYOUT: dict[str, tuple[str, ...]] = {
    "arc_easy": ("arc/ARC-Easy-Dev.jsonl",),
    "arc_challenge": ("arc/ARC-Challenge-Dev.jsonl",),
    "hellaswag": ("hellaswag/hellaswag_val_full.txt.bz2",),
    "piqa": ("piqa/valid.jsonl", "piqa/valid-labels.lst"),
    "siqa": ("siqa/dev.jsonl", "siqa/dev-labels.lst"),
    "gsm8k": ("gsm8k/test.jsonl",),
    "mmlu": ("mmlu/test/<subject>_test.csv", "mmlu/dev/<subject>_dev.csv"),
    "openbookqa": ("openbookqa/test.jsonl",),
    "nq_open": ("nq_open/NQ-open.dev.jsonl",),
}


def data_file(data_dir: str | Path | None, benchmark: str, rel: str) -> Path:
    """``data_dir/rel``, or a one-line SrscaleError naming the file and the layout expected."""
    expected = ", ".join(LAYOUT[benchmark])
    if not data_dir:
        raise SrscaleError(
            f"lm-eval local task {benchmark} needs a data folder: set eval.lm_eval.data_dir=<folder holding {expected}>"
        )
    path = Path(data_dir).expanduser() / rel
    if not path.is_file():
        raise SrscaleError(
            f"lm-eval local task {benchmark}: data file {path} not found; "
            f"eval.lm_eval.data_dir must hold {expected} (the shared/data layout)"
        )
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise SrscaleError(f"{path}:{n}: not a JSON line ({err.msg})") from err
    return rows


def _read_labels(path: Path, n_docs: int, docs_path: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != n_docs:
        raise SrscaleError(f"{path} has {len(labels)} labels but {docs_path} has {n_docs} rows; they must align")
    return labels


def _single(split: str, rows: list[dict[str, Any]]) -> datasets.DatasetDict:
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})


def _arc_choices(q: dict[str, Any]) -> dict[str, list[str]]:
    return {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}


def load_arc(data_dir: str | None = None, benchmark: str = "arc_easy", **_: Any) -> datasets.DatasetDict:
    """ARC dev split (original AI2 jsonl) as allenai/ai2_arc rows: id, question, choices{text,label}, answerKey."""
    path = data_file(data_dir, benchmark, LAYOUT[benchmark][0])
    rows = [
        {"id": r["id"], "question": r["question"]["stem"], "choices": _arc_choices(r["question"]),
         "answerKey": r["answerKey"]}
        for r in _read_jsonl(path)
    ]
    return _single("validation", rows)


def load_openbookqa(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """OpenBookQA test split (ARC-style jsonl) as allenai/openbookqa "main" rows."""
    path = data_file(data_dir, "openbookqa", LAYOUT["openbookqa"][0])
    rows = [
        {"id": r["id"], "question_stem": r["question"]["stem"], "choices": _arc_choices(r["question"]),
         "answerKey": r["answerKey"]}
        for r in _read_jsonl(path)
    ]
    return _single("test", rows)


def _hellaswag_preprocess(text: str) -> str:
    # lm-eval's hellaswag/utils.py preprocess (WikiHow artifacts); idempotent on the derived text
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_query(line: str) -> str:
    """lm-eval's query is ``activity_label: ctx_a + " " + ctx_b.capitalize()``. The derived file keeps
    ``activity_label: ctx`` with ctx_b as in the source (``... on a roof. he``); ctx_b is the trailing
    lower-case fragment after the last sentence, so capitalize that fragment."""
    head, sep, last = line.rpartition(". ")
    if not sep:
        head, sep, last = line.partition(": ")
    if last[:1].islower():
        line = head + sep + last.capitalize()
    return _hellaswag_preprocess(line)


def load_hellaswag(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """HellaSwag validation from the 6-lines-per-item text (context, gold, 4 endings) as the documents
    lm-eval's hellaswag process_docs yields: query, choices, gold (+ label as in the hub rows)."""
    path = data_file(data_dir, "hellaswag", LAYOUT["hellaswag"][0])
    with bz2.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6:
        raise SrscaleError(f"{path}: {len(lines)} lines, expected 6 per item (context, gold 0-3, 4 endings)")
    rows = []
    for i in range(0, len(lines), 6):
        ctx, gold, endings = lines[i], lines[i + 1].strip(), lines[i + 2 : i + 6]
        if gold not in ("0", "1", "2", "3"):
            raise SrscaleError(f"{path}:{i + 2}: gold label {gold!r} is not 0-3")
        label, _, _ = ctx.partition(": ")
        rows.append({
            "ind": i // 6, "activity_label": label, "ctx": ctx, "label": gold,
            "query": _hellaswag_query(ctx), "choices": [_hellaswag_preprocess(e) for e in endings],
            "gold": int(gold),
        })
    return _single("validation", rows)


def _docs_and_labels(data_dir: str | None, name: str) -> tuple[list[dict], list[str]]:
    """A release's jsonl of items and its separate one-label-per-line file, checked to match in length."""
    docs_path = data_file(data_dir, name, LAYOUT[name][0])
    docs = _read_jsonl(docs_path)
    return docs, _read_labels(data_file(data_dir, name, LAYOUT[name][1]), len(docs), docs_path)


def load_piqa(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """PIQA validation (valid.jsonl + valid-labels.lst) as baber/piqa rows: goal, sol1, sol2, label (int)."""
    docs, labels = _docs_and_labels(data_dir, "piqa")
    rows = [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)} for d, y in zip(docs, labels, strict=True)]
    return _single("validation", rows)


def load_siqa(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """Social IQa dev (dev.jsonl + dev-labels.lst, labels 1-3) as lighteval/siqa rows (label a string)."""
    docs, labels = _docs_and_labels(data_dir, "siqa")
    keys = ("context", "question", "answerA", "answerB", "answerC")
    rows = [{**{k: d[k] for k in keys}, "label": y} for d, y in zip(docs, labels, strict=True)]
    return _single("validation", rows)


def load_gsm8k(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """GSM8K test (openai/grade-school-math jsonl, same fields as openai/gsm8k "main")."""
    path = data_file(data_dir, "gsm8k", LAYOUT["gsm8k"][0])
    return _single("test", [{"question": r["question"], "answer": r["answer"]} for r in _read_jsonl(path)])


def load_nq_open(data_dir: str | None = None, **_: Any) -> datasets.DatasetDict:
    """NQ-open dev (question, answer list), the google-research-datasets/nq_open validation split."""
    path = data_file(data_dir, "nq_open", LAYOUT["nq_open"][0])
    rows = [{"question": r["question"], "answer": list(r["answer"])} for r in _read_jsonl(path)]
    return _single("validation", rows)


def _read_mmlu_csv(path: Path, subject: str) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for n, rec in enumerate(csv.reader(f), 1):
            if len(rec) != 6 or rec[5].strip() not in ("A", "B", "C", "D"):
                raise SrscaleError(f"{path}:{n}: expected question,A,B,C,D,answer-letter (no header)")
            rows.append({"question": rec[0], "subject": subject, "choices": rec[1:5],
                         "answer": "ABCD".index(rec[5].strip())})
    return rows


def load_mmlu(data_dir: str | None = None, subject: str = "", **_: Any) -> datasets.DatasetDict:
    """One MMLU subject (hendrycks CSVs, no header) as cais/mmlu rows: test split + dev (few-shot) split."""
    splits = {}
    for split, pattern in zip(("test", "dev"), LAYOUT["mmlu"], strict=True):
        path = data_file(data_dir, "mmlu", pattern.replace("<subject>", subject))
        splits[split] = datasets.Dataset.from_list(_read_mmlu_csv(path, subject))
    return datasets.DatasetDict(splits)
