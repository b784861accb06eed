"""AlpacaEval's annotation files and metrics, computed by the ``alpaca_eval`` package itself.

An annotation (AlpacaEval's ``annotations.json`` row) compares ``output_1`` (the reference,
``generator_1``, AlpacaEval 2.0's ``gpt4_1106_preview``) with ``output_2`` (the model, ``generator_2``);
``preference`` is 1 when the reference wins, 2 when the model wins, 1.5 for a draw (AlpacaEval's
weighted annotators write values in between) and missing when the judge gave no verdict (left out
of every rate, as in AlpacaEval). srscale's head-to-head outcomes map onto it: win -> 2, loss -> 1,
tie -> 1.5, failed -> null.

Metrics come from :mod:`alpaca_eval.metrics`: ``get_winrate`` (win rate, standard error, discrete
win rate, counts; in percent, as on AlpacaEval's leaderboard) and ``get_length_controlled_winrate``.
The length-controlled win rate needs, besides the annotations (both outputs, both generators, the
preference and each instruction's position in AlpacaEval's 805-instruction set, kept here as
``alpaca_eval_index``), AlpacaEval's ``df_gamed.csv`` from the Hugging Face dataset
``tatsu-lab/alpaca_eval`` (its instruction difficulties and the length-gamed baselines its GLM is
regularised towards). Without that file (offline, not cached) it is reported as unavailable, with
the reason. Its GLM was designed for AlpacaEval's own annotator against ``gpt4_1106_preview``; on
other judges and subsets it is a different quantity from the leaderboard's.
"""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from srscale.errors import SrscaleError

REFERENCE_GENERATOR = "gpt4_1106_preview"  # AlpacaEval 2.0's default reference (gpt4_turbo)
ANNOTATOR = "srscale_pair-v2_both_orders"  # FastChat's pair-v2 prompt, judged in both orders
INDEX_KEY = "alpaca_eval_index"  # position of the instruction in AlpacaEval's eval set (for the LC GLM)
PREFERENCE = {"win": 2.0, "loss": 1.0, "tie": 1.5, None: None}
HUB_DATASET, GAMED_FILE = "tatsu-lab/alpaca_eval", "df_gamed.csv"
_LC_KEYS = ("length_controlled_winrate", "lc_standard_error")


# ------------------------------------------------------------------------------------ the format
def to_annotations(items: Sequence[Mapping[str, Any]], generator: str,
                   reference_generator: str = REFERENCE_GENERATOR, annotator: str = ANNOTATOR,
                   indices: Sequence[int] | None = None,
                   datasets: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """AlpacaEval rows from head-to-head items (``prompt``, ``answer_a`` = the model, ``answer_b`` = the
    reference, ``outcome``; the two judgments are kept as ``raw_completion``)."""
    rows = []
    for i, item in enumerate(items):
        outcome = item.get("outcome")
        if outcome not in PREFERENCE:
            raise ValueError(f"unknown head-to-head outcome {outcome!r}")
        row = {"instruction": item["prompt"], "output_1": item["answer_b"], "generator_1": reference_generator,
               "output_2": item["answer_a"], "generator_2": generator, "annotator": annotator,
               "preference": PREFERENCE[outcome],
               "raw_completion": {"model_first": item.get("g1_judgment"), "reference_first": item.get("g2_judgment")}}
        if datasets is not None and datasets[i] is not None:
            row["dataset"] = datasets[i]
        if indices is not None:
            row[INDEX_KEY] = int(indices[i])
        rows.append(row)
    return rows


def write_annotations(path: str | Path, annotations: Sequence[Mapping[str, Any]]) -> Path:
    """An ``annotations.json`` as AlpacaEval writes it (a JSON list, indented)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(annotations), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def read_annotations(path: str | Path) -> list[dict[str, Any]]:
    """AlpacaEval annotations (its ``results/<model>/<annotator>/annotations.json``, or srscale's)."""
    path = Path(path)
    if not path.is_file():
        raise SrscaleError(f"AlpacaEval annotations not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SrscaleError(f"{path} is not JSON ({err.msg} at line {err.lineno})") from None
    needed = ("preference", "output_1", "output_2")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and all(k in r for k in needed)
                                                         for r in rows):
        raise SrscaleError(f"{path} is not an AlpacaEval annotations file (a list of records with "
                           f"{', '.join(needed)})")
    return rows


# ------------------------------------------------------------------------------------ metrics
def alpaca_eval_metrics():
    """The ``alpaca_eval.metrics`` module.

    alpaca-eval 0.6.6 (the newest release) imports ``pkg_resources`` for two helpers
    (``parse_version``, ``get_distribution``); setuptools 82 removed that module, and torch requires a
    recent setuptools. Where it is missing, a stand-in with those two functions (from ``packaging`` and
    ``importlib.metadata``) is in ``sys.modules`` only while alpaca_eval is imported.
    """
    if "alpaca_eval.metrics" in sys.modules:
        return sys.modules["alpaca_eval.metrics"]
    try:
        import pkg_resources  # noqa: F401 - setuptools < 82 still has it
    except ModuleNotFoundError:
        import importlib.metadata

        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        sys.modules["pkg_resources"] = shim
        try:
            import alpaca_eval.metrics
        finally:
            del sys.modules["pkg_resources"]
    import alpaca_eval.metrics

    return alpaca_eval.metrics


def _frame(annotations: Sequence[Mapping[str, Any]]):
    import pandas as pd

    df = pd.DataFrame.from_records(list(annotations))
    df["preference"] = pd.to_numeric(df["preference"], errors="coerce")
    if INDEX_KEY in df:  # AlpacaEval's GLM reads the position from the frame's index
        df = df.set_index(INDEX_KEY)
        df.index.name = None
    return df


def _plain(value: Any) -> float | None:
    """A plain float (numpy scalars from pandas become JSON-able); NaN becomes None."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def length_control_unavailable() -> str | None:
    """Why the length-controlled win rate cannot be computed here, or None when it may be."""
    alpaca_eval_metrics()
    from alpaca_eval import constants as ae_constants
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(HUB_DATASET, GAMED_FILE, cache_dir=ae_constants.DEFAULT_CACHE_DIR,
                                    repo_type="dataset")
    if isinstance(cached, str):
        return None
    if hf_constants.is_offline_mode():
        return (f"needs {GAMED_FILE} from the Hugging Face dataset {HUB_DATASET} (AlpacaEval's instruction "
                "difficulties and length-gamed baselines); it is not cached and HF_HUB_OFFLINE is set")
    return None


def winrate_metrics(annotations: Sequence[Mapping[str, Any]], length_controlled: bool = True) -> dict[str, Any]:
    """AlpacaEval's metrics of ``annotations`` (percent, as its leaderboard), by its own functions.

    Keys: ``win_rate``, ``standard_error``, ``discrete_win_rate``, ``n_wins``, ``n_wins_base``,
    ``n_draws``, ``n_total`` (annotations with a preference), ``n_missing`` (without one), and
    ``length_controlled_winrate`` / ``lc_standard_error`` (None with ``length_controlled_unavailable``
    saying why when they cannot be computed). Rates are None when no annotation has a preference.
    """
    get_winrate = alpaca_eval_metrics().get_winrate
    df = _frame(annotations)
    decided = df[df["preference"].notna()]
    out: dict[str, Any] = {"n_missing": int(len(df) - len(decided))}
    if decided.empty:
        out.update(win_rate=None, standard_error=None, discrete_win_rate=None, n_wins=0, n_wins_base=0,
                   n_draws=0, n_total=0, length_controlled_winrate=None, lc_standard_error=None,
                   length_controlled_unavailable="no annotation has a preference")
        return out
    metrics = get_winrate(decided)
    out.update({k: _plain(v) for k, v in metrics.items()})
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        out[key] = int(out[key])
    out.update(dict.fromkeys(_LC_KEYS))
    if not length_controlled:
        out["length_controlled_unavailable"] = "not asked for"
        return out
    why = length_control_unavailable() or _length_controlled(decided, out)
    if why:
        out["length_controlled_unavailable"] = why
    return out


def _length_controlled(decided, out: dict[str, Any]) -> str | None:
    """Fill the LC keys of ``out`` with AlpacaEval's GLM; the reason when it cannot run."""
    get_length_controlled_winrate = alpaca_eval_metrics().get_length_controlled_winrate
    if decided["generator_1"].nunique() != 1 or decided["generator_2"].nunique() != 1:
        return "the annotations mix several generators (one model against one reference is needed)"
    try:
        lc = get_length_controlled_winrate(decided, save_weights_dir=None, is_warn_extreme_changes=False,
                                           is_add_glm_preference_inplace=False)
    except Exception as err:  # noqa: BLE001 - any failure of the GLM or its download is reported, not raised
        return f"AlpacaEval's length-controlled GLM failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    out.update({k: _plain(lc[k]) for k in _LC_KEYS})
    return None
