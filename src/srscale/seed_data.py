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

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

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


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    tmp.replace(path)
