"""Real seed data: hub datasets and local files turned into the :class:`SeedData` the suite produces.

``load_seed_data(cfg, judge_template)`` dispatches on ``cfg.source``:

============== ====================== ==========================================================
source         hub id (default)       columns read (local files must have the same schema)
============== ====================== ==========================================================
orca_dpo_pairs Intel/orca_dpo_pairs   system, question, chosen, rejected (or the chat format
                                      input.messages / preferred_output / non_preferred_output)
oasst          OpenAssistant/oasst1   message table (message_id, parent_id, text, role, lang,
                                      rank, ...) or the message-tree export (message_tree_id,
                                      prompt with nested replies)
hh_rlhf        Anthropic/hh-rlhf      chosen, rejected (full "\\n\\nHuman: ... \\n\\nAssistant: ..."
                                      transcripts sharing everything but the last reply)
alpaca         tatsu-lab/alpaca       instruction, input, output
jsonl          (none; data_files)     ``cfg.columns`` maps our names prompt, response, chosen,
                                      rejected, system to the file's columns
============== ====================== ==========================================================

Every file and hub id is read with ``datasets.load_dataset`` (``json`` for .json/.jsonl[.gz],
``parquet``, ``csv``), so a hub user gets the ordinary loading path and cache. ``cfg.data_files`` wins
over the hub; for local files ``cfg.split`` is ignored (``datasets`` calls them ``train``).

What each source yields
-----------------------
Each source is first read into *examples*: a task prompt, the response used for IFT (or none), and
zero or more graded responses (best first, ``gold`` higher is better).

- orca_dpo_pairs: prompt = ``system + "\\n\\n" + question`` (the system message is *kept*, because the
  chosen answers follow it: "think step-by-step", "answer like to a five year old"; an empty system
  message adds nothing). IFT = chosen; graded = [chosen, rejected] with gold [1, 0]. No EFT.
- hh_rlhf: the two transcripts are split at their last ``"\\n\\nAssistant:"``; rows whose prefixes
  differ or whose final reply is empty are skipped. prompt = the human message when the prefix has a
  single human turn, else the whole prefix dialogue ("Human: ...\\n\\nAssistant: ...\\n\\nHuman: ...")
  so the final reply keeps its context. IFT = chosen; graded = [chosen, rejected], gold [1, 0].
  Only single-turn prompts enter ``seed_prompts`` (self-instruct writes single prompts). No EFT.
- alpaca: prompt = instruction, plus ``"\\n\\n" + input`` when input is non-empty; IFT = output. No
  graded responses, so no ``seed_pairs``/``eft_eval``; probe items carry gold ``None``.
- oasst: first turns only, as in the paper: root prompter messages in English that are not deleted,
  not synthetic and not rejected in review (``review_result`` False). Their assistant replies are kept
  when not deleted, not synthetic and ranked (``rank`` not null). IFT = the rank-0 reply (a prompt
  whose rank-0 reply was filtered out gives no IFT row). graded = kept replies ordered by rank, gold
  ``n - 1 - position`` (best = n - 1, worst = 0). ``eft`` stays empty here: the paper's EFT needs the
  SFT model's own judgments, which the pipeline obtains for :func:`oasst_ranked_items` and turns
  into rows with :func:`build_oasst_eft`.
- jsonl: prompt (with ``system`` prefixed as for orca when mapped), IFT = response, else chosen;
  graded = [chosen, rejected] with gold [1, 0] when both are mapped.

Splits
------
Examples are grouped by prompt text and the distinct prompts shuffled with ``random.Random(cfg.seed)``.
At most ``eval_fraction`` of them are held out; the held-out prompts are dealt, in order, to
``eft_eval`` (prompts with >= 2 graded responses), ``probe`` and ``heldout``, each taking at most what
``cfg.sizes`` asks (``sizes.probe`` counts judge *items*: every graded response of a probe prompt,
gold as in ``eft_eval``, or its IFT response with gold ``None``). When the held-out share is smaller
than the three requests together, it is divided in proportion to them; when it is larger, the
prompts nobody asked for go back to training, so every held-out prompt is used by some eval split. Training prompts give ``ift``, ``seed_pairs``
(best vs worst graded response, when they differ) and ``seed_prompts``; these three share prompts on
purpose (SFT on the chosen answer, DPO on its pair, and the self-instruct pool drawn from the seed
data, as in the paper). No prompt is on both sides, and ``eft_eval``, ``probe`` and ``heldout`` are
pairwise disjoint. ``max_examples`` caps the examples read (in source order, after filtering), so
the result is a deterministic function of the data, ``seed``, ``eval_fraction``, ``sizes`` and
``max_examples``.

Errors are :class:`SrscaleError` with one line: a hub dataset that is neither reachable nor cached, a
missing data file, an unreadable file, or missing columns (naming them and the columns present).
The hub is probed with a short TCP connect first (``HUB_PROBE_TIMEOUT_S``); when it cannot be reached
the load runs in ``datasets``' offline mode, which still serves a cached copy, instead of spending
tens of seconds in retries.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from srscale.config import ColumnsConfig, DataConfig
from srscale.errors import SrscaleError
from srscale.seed_data import JsonlError, SeedData, open_text, read_jsonl

HUB_IDS = {
    "orca_dpo_pairs": "Intel/orca_dpo_pairs",
    "oasst": "OpenAssistant/oasst1",
    "hh_rlhf": "Anthropic/hh-rlhf",
    "alpaca": "tatsu-lab/alpaca",
}

# What a user must provide instead of the hub, for the one-line error.
EXPECTED_COLUMNS = {
    "orca_dpo_pairs": "system, question, chosen, rejected",
    "oasst": "oasst1 messages (message_id, parent_id, text, role, lang, rank) or message trees "
    "(message_tree_id, prompt)",
    "hh_rlhf": "chosen, rejected",
    "alpaca": "instruction, input, output",
    "jsonl": "the columns named in data.columns",
}

OUR_COLUMNS = tuple(f.name for f in fields(ColumnsConfig))  # prompt, response, chosen, rejected, system
HUB_PROBE_TIMEOUT_S = 3.0


class DataSourceError(SrscaleError):
    """Seed data could not be loaded: one line naming the source, what failed and how to fix it."""


# ----------------------------------------------------------------------------------- examples
@dataclass
class Example:
    """One task prompt from a source, before splitting."""

    prompt: str
    ift: str | None = None  # the response used for instruction fine-tuning
    responses: list[str] = field(default_factory=list)  # graded responses, best first
    gold: list[float] = field(default_factory=list)  # aligned with responses, higher is better
    ranks: list[int] = field(default_factory=list)  # human ranks (oasst), aligned with responses
    single_turn: bool = True  # False: the prompt is a rendered multi-turn dialogue (hh_rlhf)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _join(first: str, second: str) -> str:
    return f"{first}\n\n{second}" if first and second else first or second


def _pair(prompt: str, chosen: str, rejected: str, ift: str | None = None, **kw) -> Example | None:
    if not prompt or not chosen:
        return None
    if rejected and rejected != chosen:
        return Example(prompt, ift or chosen, [chosen, rejected], [1.0, 0.0], **kw)
    return Example(prompt, ift or chosen, **kw)


# -------------------------------------------------------------------------------- orca pairs
def _orca_examples(rows: Iterable[dict]) -> Iterator[Example]:
    for row in rows:
        if "question" in row:
            system, question = _text(row.get("system")), _text(row.get("question"))
            chosen, rejected = _text(row.get("chosen")), _text(row.get("rejected"))
        else:  # chat format: input.messages + preferred_output / non_preferred_output
            messages = (row.get("input") or {}).get("messages") or []
            system = "\n\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
            users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
            question = users[-1] if users else ""
            chosen = _first_content(row.get("preferred_output"))
            rejected = _first_content(row.get("non_preferred_output"))
        if question:
            ex = _pair(_join(system, question), chosen, rejected)
            if ex:
                yield ex


def _first_content(messages: Any) -> str:
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        return _text(messages[0].get("content"))
    return _text(messages)


# ---------------------------------------------------------------------------------- hh-rlhf
_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def split_hh_transcript(transcript: str) -> tuple[str, str]:
    """``(prefix, final assistant reply)``: the transcript cut at its last ``"\\n\\nAssistant:"``."""
    prefix, sep, final = transcript.rpartition(_ASSISTANT)
    return (prefix, final.strip()) if sep else ("", "")


def hh_prompt(prefix: str) -> tuple[str, bool]:
    """The task prompt for a dialogue prefix, and whether it is a single human turn."""
    if prefix.count(_HUMAN) == 1 and _ASSISTANT not in prefix:
        return prefix.split(_HUMAN, 1)[1].strip(), True
    return prefix.strip(), False


def _hh_examples(rows: Iterable[dict]) -> Iterator[Example]:
    for row in rows:
        prefix, chosen = split_hh_transcript(row.get("chosen") or "")
        prefix_r, rejected = split_hh_transcript(row.get("rejected") or "")
        if not prefix or prefix != prefix_r or not chosen or not rejected:
            continue
        prompt, single = hh_prompt(prefix)
        ex = _pair(prompt, chosen, rejected, single_turn=single)
        if ex:
            yield ex


# ----------------------------------------------------------------------------------- alpaca
def _alpaca_examples(rows: Iterable[dict]) -> Iterator[Example]:
    for row in rows:
        prompt = _join(_text(row.get("instruction")), _text(row.get("input")))
        output = _text(row.get("output"))
        if prompt and output:
            yield Example(prompt, output)


# ------------------------------------------------------------------------------------ oasst
def _oasst_root_ok(msg: dict) -> bool:
    return (msg.get("role") == "prompter" and msg.get("lang") == "en" and not msg.get("deleted")
            and not msg.get("synthetic") and msg.get("review_result") is not False
            and bool(_text(msg.get("text"))))


def _oasst_reply_ok(msg: dict) -> bool:
    return (msg.get("role") == "assistant" and not msg.get("deleted") and not msg.get("synthetic")
            and msg.get("rank") is not None and bool(_text(msg.get("text"))))


def _oasst_example(root: dict, replies: Sequence[dict]) -> Example:
    kept = sorted((r for r in replies if _oasst_reply_ok(r)), key=lambda r: r["rank"])
    n = len(kept)
    best = next((_text(r["text"]) for r in kept if r["rank"] == 0), None)
    return Example(_text(root["text"]), best, [_text(r["text"]) for r in kept],
                   [float(n - 1 - i) for i in range(n)], [int(r["rank"]) for r in kept])


def _oasst_examples(rows: Iterable[dict], tree_format: bool) -> Iterator[Example]:
    if tree_format:
        for row in rows:
            root = row.get("prompt") or {}
            if _oasst_root_ok(root):
                yield _oasst_example(root, root.get("replies") or [])
        return
    roots: list[dict] = []
    children: dict[str, list[dict]] = {}
    for msg in rows:
        if msg.get("parent_id") is None:
            if _oasst_root_ok(msg):
                roots.append(msg)
        elif msg.get("role") == "assistant":
            children.setdefault(msg["parent_id"], []).append(msg)
    for root in roots:
        yield _oasst_example(root, children.get(root["message_id"], []))


# ----------------------------------------------------------------------------------- generic
def _columns(columns: Any) -> dict[str, str]:
    """``data.columns`` as ``{our name: file column}`` for the names that are set (a ColumnsConfig, or a
    plain mapping from Python callers, whose keys are checked here as the schema checks the config's)."""
    if is_dataclass(columns):
        return {k: v for k, v in asdict(columns).items() if v}
    unknown = sorted(set(columns or {}) - set(OUR_COLUMNS))
    if unknown:
        raise DataSourceError(
            f"data=jsonl: unknown key(s) {', '.join(unknown)} in data.columns; "
            f"allowed: {', '.join(OUR_COLUMNS)}")
    return {k: v for k, v in (columns or {}).items() if v}


def _column_map(cfg: DataConfig, present: list[str], where: str) -> dict[str, str]:
    mapping = _columns(cfg.columns) or {c: c for c in OUR_COLUMNS if c in present}
    missing = [f"{ours}->{theirs}" for ours, theirs in mapping.items() if theirs not in present]
    if missing:
        raise DataSourceError(
            f"data=jsonl: {where} has no column(s) {', '.join(missing)}; its columns are "
            f"{', '.join(present)}; fix data.columns")
    if "prompt" not in mapping or not ({"response", "chosen"} & set(mapping)):
        raise DataSourceError(
            f"data=jsonl: data.columns must map prompt and response (or chosen[, rejected]) to columns "
            f"of {where}; got {mapping or '{}'}; its columns are {', '.join(present)}")
    if "rejected" in mapping and "chosen" not in mapping:
        raise DataSourceError("data=jsonl: data.columns maps rejected but not chosen")
    return mapping


def _generic_examples(rows: Iterable[dict], mapping: dict[str, str]) -> Iterator[Example]:
    def col(row: dict, name: str) -> str:
        return _text(row.get(mapping[name])) if name in mapping else ""

    for row in rows:
        prompt = _join(col(row, "system"), col(row, "prompt"))
        if not col(row, "prompt"):
            continue
        ex = _pair(prompt, col(row, "chosen"), col(row, "rejected"), ift=col(row, "response") or None)
        if ex is None and col(row, "response"):
            ex = Example(prompt, col(row, "response"))
        if ex:
            yield ex


# ----------------------------------------------------------------------------------- loading
def _data_suffix(path: str) -> str:
    """The format suffix of a data file name, after any compression suffix (``a.jsonl.gz`` -> ``.jsonl``)."""
    name = path.lower()
    for comp in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        name = name.removesuffix(comp)
    return Path(name).suffix


def _builder(paths: list[str], source: str) -> str:
    kinds = set()
    for p in paths:
        suffix = _data_suffix(p)
        kind = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
        if kind is None:
            raise DataSourceError(f"data={source}: cannot read {p}: use .json, .jsonl, .parquet or .csv "
                                  f"(optionally .gz)")
        kinds.add(kind)
    if len(kinds) > 1:
        raise DataSourceError(f"data={source}: data.data_files mixes formats ({', '.join(sorted(kinds))})")
    return kinds.pop()


def _check_files(paths: list[str], source: str) -> list[str]:
    out = []
    for p in paths:
        p = os.path.expanduser(str(p))
        if glob.has_magic(p):
            if not glob.glob(p):
                raise DataSourceError(f"data={source}: no data file matches {p}")
        elif not Path(p).is_file():
            raise DataSourceError(f"data={source}: data file not found: {p}")
        out.append(p)
    return out


def _expanded(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out += [Path(m) for m in sorted(glob.glob(p))] if glob.has_magic(p) else [Path(p)]
    return out


def _json_problem(path: Path) -> str | None:
    """Why a ``.json``/``.jsonl`` data file cannot give rows, naming the line; None when it can.

    JSON lines (one object per line) are read line by line; a ``.json`` file whose text starts with
    ``[`` or ``{`` is one JSON document (a list of objects, or columns) as ``datasets`` reads it.
    ``.zst`` and ``.zip`` files are left to ``datasets``.
    """
    if str(path).lower().endswith((".zst", ".zip")):
        return None
    try:
        with open_text(path) as fh:
            head = fh.read(4096).lstrip()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        return f"{path} cannot be read ({type(exc).__name__}: {exc})"
    if not head:
        return f"{path} is empty: expected one JSON object per line"
    document = _data_suffix(str(path)) == ".json" and head[0] in "[{" and not _one_object_per_line(path)
    if not document:
        try:
            read_jsonl(path, allow_empty=False)
        except JsonlError as exc:
            return str(exc)
        return None
    try:
        with open_text(path) as fh:
            obj = json.load(fh)
    except json.JSONDecodeError as exc:
        return f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(obj, list):
        if not obj:
            return f"{path} is empty: expected a list of JSON objects"
        bad = next((i for i, row in enumerate(obj) if not isinstance(row, dict)), None)
        if bad is not None:
            return f"{path}: item {bad} of the list is {type(obj[bad]).__name__}, not a JSON object"
    return None


def _one_object_per_line(path: Path) -> bool:
    """Whether the first non-blank line of ``path`` is a whole JSON object (JSON lines in a .json)."""
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                try:
                    return isinstance(json.loads(line), dict)
                except json.JSONDecodeError:
                    return False
    return False


def check_files(cfg: DataConfig) -> None:
    """Fail in one line on a data file that is missing, of an unknown format, empty, or not valid JSON.

    Runs before the job starts (:mod:`srscale.preflight`); reads each JSON file once (parquet and csv
    files are only checked to exist). Raises :class:`DataSourceError`.
    """
    if not cfg.data_files:
        return
    paths = _check_files(list(cfg.data_files), cfg.source)
    if _builder(paths, cfg.source) != "json":
        return
    for path in _expanded(paths):
        problem = _json_problem(path)
        if problem:
            raise DataSourceError(f"data={cfg.source}: {problem}")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    return f"{type(exc).__name__}: {msg[:300]}" if msg else type(exc).__name__


def _proxy_for(url: str) -> str | None:
    host = urlparse(url).hostname or ""
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if any(host.endswith(h.strip().lstrip("*")) for h in no_proxy.split(",") if h.strip()):
        return None
    scheme = urlparse(url).scheme
    for var in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def hub_reachable(endpoint: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the proxy in front of it) opens within ``timeout``.

    Runs in a daemon thread so a hanging DNS lookup cannot hold the caller past ``timeout``.
    """
    target = urlparse(_proxy_for(endpoint) or endpoint)
    host = target.hostname
    port = target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextmanager
def _offline_mode() -> Iterator[None]:
    """``datasets``/``huggingface_hub`` offline mode for one call (what ``HF_HUB_OFFLINE=1`` sets)."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconstants

    saved = dconfig.HF_HUB_OFFLINE, hconstants.HF_HUB_OFFLINE
    dconfig.HF_HUB_OFFLINE = hconstants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dconfig.HF_HUB_OFFLINE, hconstants.HF_HUB_OFFLINE = saved


def _hub_hint(source: str) -> str:
    return (f"download it, or pass data.data_files=[/path/to/file.jsonl] with columns "
            f"{EXPECTED_COLUMNS[source]}")


def load_rows(cfg: DataConfig):
    """The raw ``datasets.Dataset`` for ``cfg`` (local files when given, else the hub id), and a label."""
    import datasets

    source = cfg.source
    if cfg.data_files:
        paths = _check_files(list(cfg.data_files), source)
        builder = _builder(paths, source)
        try:
            ds = datasets.load_dataset(builder, data_files=paths, split="train")
        except Exception as exc:  # noqa: BLE001 - reported to the user as one line
            # datasets names neither the file nor the line of a bad JSON row: find them.
            problem = next(filter(None, map(_json_problem, _expanded(paths))), None) if builder == "json" else None
            problem = problem or f"cannot read {', '.join(paths)} ({_one_line(exc)})"
            raise DataSourceError(f"data={source}: {problem}") from exc
        return ds, paths[0] if len(paths) == 1 else f"{len(paths)} files ({paths[0]}, ...)"

    hub_id = cfg.hub_id or HUB_IDS.get(source)
    if not hub_id:
        raise DataSourceError(f"data={source}: no input; pass data.data_files=[/path/to/file.jsonl] "
                              f"(or data.hub_id=owner/name) with {EXPECTED_COLUMNS[source]}")
    local_dir = Path(hub_id).expanduser().is_dir()
    offline = bool(datasets.config.HF_HUB_OFFLINE) or (
        not local_dir and not hub_reachable(datasets.config.HF_ENDPOINT))
    try:
        if offline and not datasets.config.HF_HUB_OFFLINE:
            with _offline_mode():
                ds = datasets.load_dataset(hub_id, split=cfg.split)
        else:
            ds = datasets.load_dataset(hub_id, split=cfg.split)
    except Exception as exc:  # noqa: BLE001 - reported to the user as one line
        if offline or isinstance(exc, ConnectionError):
            why = "offline and not cached"
        else:
            why = _one_line(exc)
        raise DataSourceError(f"data={source}: cannot load hub dataset '{hub_id}' split '{cfg.split}' "
                              f"({why}); {_hub_hint(source)}") from exc
    return ds, f"hub dataset '{hub_id}'"


def _require(present: list[str], needed: Sequence[str], where: str, source: str) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataSourceError(
            f"data={source}: {where} lacks column(s) {', '.join(missing)} (has: {', '.join(present)}); "
            f"expected {EXPECTED_COLUMNS[source]}")


def read_examples(cfg: DataConfig) -> list[Example]:
    """Load ``cfg``'s rows and turn them into examples (capped at ``cfg.max_examples``)."""
    if cfg.source not in HUB_IDS and cfg.source != "jsonl":
        raise DataSourceError(f"data={cfg.source}: not a file or hub source (use "
                              f"{', '.join([*HUB_IDS, 'jsonl'])})")
    ds, where = load_rows(cfg)
    present = list(ds.column_names)
    source = cfg.source
    if source == "orca_dpo_pairs":
        if not {"input", "preferred_output"} <= set(present):
            _require(present, ("question", "chosen", "rejected"), where, source)
        examples: Iterable[Example] = _orca_examples(ds)
    elif source == "hh_rlhf":
        _require(present, ("chosen", "rejected"), where, source)
        examples = _hh_examples(ds)
    elif source == "alpaca":
        _require(present, ("instruction", "output"), where, source)
        examples = _alpaca_examples(ds)
    elif source == "oasst":
        tree = "prompt" in present and "message_id" not in present
        if not tree:
            _require(present, ("message_id", "parent_id", "text", "role", "lang", "rank"), where, source)
        examples = _oasst_examples(ds, tree_format=tree)
    else:
        examples = _generic_examples(ds, _column_map(cfg, present, where))
    out = []
    for ex in examples:
        if cfg.max_examples is not None and len(out) >= cfg.max_examples:
            break
        out.append(ex)
    if not out:
        raise DataSourceError(f"data={source}: {where} gave no usable examples "
                              f"(expected {EXPECTED_COLUMNS[source]})")
    return out


# ---------------------------------------------------------------------------------- splitting
@dataclass
class Split:
    """Examples dealt to each side; eval-side groups are pairwise disjoint by prompt."""

    train: list[Example]
    eft_eval: list[Example]
    probe: list[Example]
    heldout: list[Example]


def _apportion(total: int, wants: dict[str, int]) -> dict[str, int]:
    """``wants`` scaled down to ``total`` by largest remainder; every non-zero want keeps >= 1 if it can."""
    if sum(wants.values()) <= total:
        return dict(wants)
    asked = sum(wants.values())
    exact = {k: total * v / asked for k, v in wants.items()}
    got = {k: int(x) for k, x in exact.items()}
    for k in sorted(wants, key=lambda k: exact[k] - got[k], reverse=True)[: total - sum(got.values())]:
        got[k] += 1
    for k in wants:  # lift zero shares of non-zero wants from the largest share
        if wants[k] and not got[k]:
            donor = max(got, key=got.get)
            if got[donor] > 1:
                got[donor] -= 1
                got[k] = 1
    return got


def split_examples(examples: list[Example], cfg: DataConfig) -> Split:
    """Deal examples to training and the three eval splits, disjoint by prompt (see module docs)."""
    groups: dict[str, list[Example]] = {}
    for ex in examples:
        groups.setdefault(ex.prompt, []).append(ex)
    keys = list(groups)
    random.Random(cfg.seed).shuffle(keys)

    graded = [k for k in keys if any(len(e.responses) >= 2 for e in groups[k])]
    def n_items(k: str) -> int:  # probe items a prompt gives: its graded responses, else its IFT rows
        return sum(max(1, len(e.responses)) for e in groups[k])

    items_per_prompt = sum(n_items(k) for k in keys) / len(keys) if keys else 1
    sizes = cfg.sizes
    wants = {
        "eft_eval": min(sizes.eft_eval, len(graded)),
        "probe": math.ceil(sizes.probe / items_per_prompt) if sizes.probe else 0,
        "heldout": sizes.heldout,
    }
    budget = min(int(round(len(keys) * cfg.eval_fraction)), len(keys) - 1) if len(keys) > 1 else 0
    share = _apportion(budget, wants)

    # Walking the shuffled prompts, eft_eval takes graded ones (they can be scarce, e.g. oasst prompts
    # with a single ranked reply), then probe and heldout take the next ones. At most sum(share) <=
    # budget prompts are taken; everything not taken trains.
    taken: dict[str, list[str]] = {name: [] for name in wants}
    used: set[str] = set()
    graded_set = set(graded)
    for k in keys:
        if len(taken["eft_eval"]) >= share["eft_eval"]:
            break
        if k in graded_set:
            taken["eft_eval"].append(k)
            used.add(k)
    probe_items = 0
    for name in ("probe", "heldout"):
        for k in keys:
            if len(taken[name]) >= share[name] or (name == "probe" and probe_items >= sizes.probe):
                break
            if k not in used:
                taken[name].append(k)
                used.add(k)
                probe_items += n_items(k) if name == "probe" else 0
    train = [ex for k in keys if k not in used for ex in groups[k]]
    return Split(train, *([ex for k in taken[name] for ex in groups[k]]
                          for name in ("eft_eval", "probe", "heldout")))


def build_seed_data(split: Split, cfg: DataConfig, *, seed_prompts_single_turn: bool = True) -> SeedData:
    """The :class:`SeedData` splits from a :class:`Split` (pure)."""
    ift, pairs, seed_prompts, seen = [], [], [], set()
    for ex in split.train:
        if ex.ift:
            ift.append({"prompt": ex.prompt, "response": ex.ift})
        if len(ex.responses) >= 2 and ex.gold[0] > ex.gold[-1] and ex.responses[0] != ex.responses[-1]:
            pairs.append({"prompt": ex.prompt, "chosen": ex.responses[0], "rejected": ex.responses[-1]})
        if ex.prompt not in seen and (ex.single_turn or not seed_prompts_single_turn):
            seen.add(ex.prompt)
            seed_prompts.append({"prompt": ex.prompt})
    eft_eval = [{"prompt": ex.prompt, "responses": list(ex.responses), "gold": list(ex.gold)}
                for ex in split.eft_eval if len(ex.responses) >= 2]
    probe: list[dict] = []
    for ex in split.probe:
        if ex.responses:
            probe += [{"prompt": ex.prompt, "response": r, "gold": g} for r, g in zip(ex.responses, ex.gold, strict=True)]
        elif ex.ift:
            probe.append({"prompt": ex.prompt, "response": ex.ift, "gold": None})
    heldout = list({ex.prompt: {"prompt": ex.prompt, "family": None} for ex in split.heldout}.values())
    return SeedData(ift=ift, eft=[], seed_pairs=pairs, eft_eval=eft_eval, heldout=heldout,
                    seed_prompts=seed_prompts, probe=probe[: cfg.sizes.probe], verifiable=False)


def check_judge_template(template: str) -> None:
    missing = [slot for slot in ("{prompt}", "{response}") if slot not in template]
    if missing:
        raise DataSourceError(f"judge template lacks the slot(s) {', '.join(missing)}; "
                              f"see conf/judge/paper.yaml")


def load_seed_data(cfg: DataConfig, judge_template: str) -> SeedData:
    """Seed data from a hub dataset or local files, per ``cfg.source`` (see the module docs)."""
    check_judge_template(judge_template)
    examples = read_examples(cfg)
    return build_seed_data(split_examples(examples, cfg), cfg)


# --------------------------------------------------------------------------------- oasst EFT
def fill_judge_template(template: str, prompt: str, response: str) -> str:
    """The judge prompt for one item; the one definition lives in :func:`srscale.judging.build_judge_prompt`."""
    from srscale.judging import build_judge_prompt

    return build_judge_prompt(template, prompt, response)


def oasst_ranked_items(cfg: DataConfig, limit: int | None = None) -> list[dict]:
    """What the SFT model must judge to build the paper's EFT set.

    ``{"prompt", "replies", "ranks"}`` for every *training-side* prompt of ``cfg`` (the same split
    :func:`load_seed_data` makes, so no eval prompt leaks into EFT) with >= 2 ranked replies, replies
    ordered best first, ``ranks`` the human ranks (0 = best). ``limit`` keeps the first ``limit``.
    """
    if cfg.source != "oasst":
        raise DataSourceError(f"data={cfg.source}: EFT from ranked replies needs data.source=oasst")
    split = split_examples(read_examples(cfg), cfg)
    items = [{"prompt": ex.prompt, "replies": list(ex.responses), "ranks": list(ex.ranks)}
             for ex in split.train if len(ex.responses) >= 2]
    return items[:limit] if limit is not None else items


def _as_item(item: Any) -> tuple[str, list[str], list[int]]:
    if isinstance(item, dict):
        return item["prompt"], list(item["replies"]), list(item["ranks"])
    prompt, replies, ranks = item
    return prompt, list(replies), list(ranks)


def _as_judgment(j: Any) -> tuple[str, Any]:
    if isinstance(j, dict):
        return j.get("text") or "", j.get("score")
    text, score = j
    return text or "", score


def _int_score(score: Any) -> int | None:
    """An integer score, or None for a failed parse / non-integral value (never a stand-in number)."""
    if score is None or isinstance(score, bool):
        return None
    if isinstance(score, int):
        return score
    if isinstance(score, float) and score.is_integer():
        return int(score)
    return None


def scores_agree(ranks: Sequence[int], scores: Sequence[int], allow_ties: bool = True) -> bool:
    """Whether ``scores`` (higher is better) order the replies as human ``ranks`` (0 = best) do.

    Every pair with a better human rank must score at least as high (strictly higher when
    ``allow_ties`` is False), and the scores must not all be equal: a flat scoring agrees with any
    order vacuously and teaches nothing about ranking. Pairs with equal human ranks are unconstrained.
    """
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    for a, i in enumerate(order):
        for j in order[a + 1:]:
            if ranks[i] == ranks[j]:
                continue
            if scores[i] < scores[j] or (not allow_ties and scores[i] == scores[j]):
                return False
    return len(set(scores)) > 1


def balance_scores(rows: list[dict], rng: random.Random) -> list[dict]:
    """Downsample so no score value has more rows than the second most common one.

    Only the most common value can exceed that count; it is cut to it by ``rng.sample``. Kept rows
    stay in their input order. With a single score value there is nothing to balance against and
    all rows are kept.
    """
    counts = Counter(r["score"] for r in rows)
    if len(counts) < 2:
        return list(rows)
    (top, _), (_, cap) = counts.most_common(2)
    top_idx = [i for i, r in enumerate(rows) if r["score"] == top]
    keep = set(rng.sample(top_idx, cap)) if len(top_idx) > cap else set(top_idx)
    return [r for i, r in enumerate(rows) if r["score"] != top or i in keep]


def build_oasst_eft(items: Sequence[Any], judgments: Sequence[Sequence[Any]], judge_template: str,
                    rng: random.Random | int, *, allow_ties: bool = True) -> list[dict]:
    """EFT rows from the SFT model's judgments of human-ranked replies (Yuan et al. 2024, sec. 3).

    ``items[i]`` is ``{"prompt", "replies", "ranks"}`` (or a ``(prompt, replies, ranks)`` tuple);
    ``judgments[i][j]`` judges ``replies[j]`` as ``{"text", "score"}`` (or ``(text, score)``) where
    score is the parsed integer or None when the judgment did not parse. A prompt is kept only when
    every reply's judgment parsed and :func:`scores_agree` with the human ranks (ties allowed unless
    ``allow_ties=False``); then :func:`balance_scores` keeps the most common score from dominating.
    Rows are ``{"prompt": filled judge template, "response": judgment text, "score": int}``.
    """
    check_judge_template(judge_template)
    rng = rng if isinstance(rng, random.Random) else random.Random(rng)
    if len(items) != len(judgments):
        raise ValueError(f"{len(items)} items but {len(judgments)} judgment lists")
    rows: list[dict] = []
    for item, judged in zip(items, judgments, strict=True):
        prompt, replies, ranks = _as_item(item)
        if not (len(replies) == len(ranks) == len(judged)):
            raise ValueError(f"prompt {prompt[:40]!r}: {len(replies)} replies, {len(ranks)} ranks, "
                             f"{len(judged)} judgments")
        parsed = [_as_judgment(j) for j in judged]
        scores = [_int_score(s) for _, s in parsed]
        if len(replies) < 2 or any(s is None for s in scores) or not scores_agree(ranks, scores, allow_ties):
            continue
        for reply, (text, _), score in zip(replies, parsed, scores, strict=True):
            rows.append({"prompt": fill_judge_template(judge_template, prompt, reply),
                         "response": text.strip(), "score": score})
    return balance_scores(rows, rng)
