"""The seed data every source produces, in one shape the pipeline consumes.

Each split is a list of plain dicts so it serialises to jsonl unchanged. Field contracts:

- ``ift``: ``{"prompt": str, "response": str}`` — instruction fine-tuning (the good response).
- ``eft``: ``{"prompt": str, "response": str, "score": int}`` — judge fine-tuning. ``prompt`` is the
  judge template already filled with a task prompt and a response; ``response`` is the target
  judgment, a short justification ending in ``Score: n``; ``score`` is n.
- ``seed_pairs``: ``{"prompt": str, "chosen": str, "rejected": str}`` — seed preference pairs.
- ``eft_eval``: ``{"prompt": str, "responses": [str, ...], "gold": [float, ...]}`` — held-out judge
  set, several responses per prompt with gold scores (higher is better; human ranks are converted so
  that higher is better) for the reward-model metrics.
- ``heldout``: ``{"prompt": str, "family": str | None}`` — held-out prompts for task accuracy.
- ``seed_prompts``: ``{"prompt": str}`` — the pool self-instruct draws few-shot examples from.
- ``probe``: ``{"prompt": str, "response": str, "gold": float | None}`` — judge items for the gate probe.

Splits from one source are disjoint in their task prompts.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO

from srscale.errors import SrscaleError

SPLITS = ("ift", "eft", "seed_pairs", "eft_eval", "heldout", "seed_prompts", "probe")


@dataclass
class SeedData:
    ift: list[dict] = field(default_factory=list)
    eft: list[dict] = field(default_factory=list)
    seed_pairs: list[dict] = field(default_factory=list)
    eft_eval: list[dict] = field(default_factory=list)
    heldout: list[dict] = field(default_factory=list)
    seed_prompts: list[dict] = field(default_factory=list)
    probe: list[dict] = field(default_factory=list)
    verifiable: bool = False  # True when a checker can grade any response (the bundled suite)

    def save(self, directory: Path) -> None:
        """Write each split as ``<split>.jsonl`` plus ``meta.json`` (atomic per file)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            write_jsonl(directory / f"{name}.jsonl", getattr(self, name))
        write_json(directory / "meta.json", {"verifiable": self.verifiable, "counts": self.counts()})

    @classmethod
    def load(cls, directory: Path) -> SeedData:
        meta = json.loads((directory / "meta.json").read_text())
        return cls(**{name: read_jsonl(directory / f"{name}.jsonl") for name in SPLITS},
                   verifiable=meta["verifiable"])

    def counts(self) -> dict[str, int]:
        return {f.name: len(getattr(self, f.name)) for f in fields(self) if f.name in SPLITS}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


class JsonlError(SrscaleError):
    """A JSON-lines file that is missing, empty or has a line that is not a JSON object."""


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def open_text(path: Path) -> IO[str]:
    """``path`` opened for reading text, decompressing ``.gz``, ``.bz2`` and ``.xz``."""
    opener = _OPENERS.get(Path(path).suffix.lower())
    return opener(path, "rt", encoding="utf-8") if opener else open(path, encoding="utf-8")


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file.

    Raises :class:`JsonlError` (one line naming the file and the line) for a missing or unreadable file,
    a line that is not valid JSON (a truncated last line included) or one that is not a JSON object.
    """
    path = Path(path)
    lineno = 0
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    raise JsonlError(f"{path} line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                     "fix or delete that line") from None
                if not isinstance(obj, dict):
                    raise JsonlError(f"{path} line {lineno}: expected a JSON object, got "
                                     f"{type(obj).__name__} {line.strip()[:40]!r}") from None
                yield lineno, obj
    except FileNotFoundError:
        raise JsonlError(f"{path}: file not found") from None
    except (UnicodeDecodeError, EOFError, OSError) as exc:  # binary, truncated archive, unreadable
        where = f" line {lineno + 1}" if lineno or isinstance(exc, UnicodeDecodeError) else ""
        raise JsonlError(f"{path}{where}: cannot be read as UTF-8 JSON lines "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None


def read_jsonl(path: Path, *, allow_empty: bool = True) -> list[dict]:
    """The objects of a JSON-lines file, blank lines skipped (see :func:`iter_jsonl` for the errors).

    ``allow_empty=False`` also rejects a file with no objects (a split may legitimately be empty; a
    data file or a question file may not).
    """
    rows = [obj for _, obj in iter_jsonl(path)]
    if not rows and not allow_empty:
        raise JsonlError(f"{path} is empty: expected one JSON object per line")
    return rows


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    tmp.replace(path)
