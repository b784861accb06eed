"""AlpacaEval annotations and metrics through the alpaca_eval package: the format, hand-computed rates,
the length-controlled rate's inputs, and (where the shared data has it) the official leaderboard row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from srscale.errors import SrscaleError
from srscale.evaluation import alpacaeval as ae


def annotation(pref, out1="reference answer", out2="model answer", **extra):
    return {"instruction": "q", "output_1": out1, "generator_1": "gpt4_1106_preview", "output_2": out2,
            "generator_2": "m", "annotator": "x", "preference": pref, **extra}


ITEMS = [
    {"prompt": "p0", "answer_a": "mine 0", "answer_b": "ref 0", "outcome": "win", "g1_judgment": "[[A]]",
     "g2_judgment": "[[B]]"},
    {"prompt": "p1", "answer_a": "mine 1", "answer_b": "ref 1", "outcome": "loss"},
    {"prompt": "p2", "answer_a": "mine 2", "answer_b": "ref 2", "outcome": "tie"},
    {"prompt": "p3", "answer_a": "mine 3", "answer_b": "ref 3", "outcome": None},
]


def test_head_to_head_items_become_alpaca_eval_annotations():
    rows = ae.to_annotations(ITEMS, "tiny|iter_1", indices=[10, 20, 30, 40], datasets=["koala", None, "oasst", "x"])
    assert [r["preference"] for r in rows] == [2.0, 1.0, 1.5, None]
    first = rows[0]
    assert (first["output_1"], first["generator_1"]) == ("ref 0", "gpt4_1106_preview")  # the reference
    assert (first["output_2"], first["generator_2"]) == ("mine 0", "tiny|iter_1")  # the model
    assert first["instruction"] == "p0" and first["annotator"] == ae.ANNOTATOR and first["dataset"] == "koala"
    assert first["raw_completion"] == {"model_first": "[[A]]", "reference_first": "[[B]]"}
    assert [r[ae.INDEX_KEY] for r in rows] == [10, 20, 30, 40] and "dataset" not in rows[1]
    with pytest.raises(ValueError, match="outcome"):
        ae.to_annotations([{**ITEMS[0], "outcome": "draw"}], "m")


def test_annotations_round_trip_and_bad_files_are_one_line(tmp_path):
    rows = ae.to_annotations(ITEMS, "m")
    path = ae.write_annotations(tmp_path / "a" / "annotations.json", rows)
    assert ae.read_annotations(path) == rows
    assert json.loads(path.read_text())[3]["preference"] is None  # JSON null, as AlpacaEval writes NaN
    with pytest.raises(SrscaleError, match="not found"):
        ae.read_annotations(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SrscaleError, match="is not JSON"):
        ae.read_annotations(tmp_path / "bad.json")
    (tmp_path / "outputs.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]))
    with pytest.raises(SrscaleError, match="not an AlpacaEval annotations file"):
        ae.read_annotations(tmp_path / "outputs.json")


def test_win_rate_standard_error_and_counts_are_alpaca_evals():
    m = ae.winrate_metrics([annotation(p) for p in (2, 2, 1, 1.5, None)], length_controlled=False)
    # decided preferences - 1: 1, 1, 0, 0.5 -> mean 0.625; sample sd / sqrt(4) for the standard error
    values = [1, 1, 0, 0.5]
    sd = math.sqrt(sum((v - 0.625) ** 2 for v in values) / 3)
    assert m["win_rate"] == pytest.approx(62.5)
    assert m["standard_error"] == pytest.approx(100 * sd / 2)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"], m["n_missing"]) == (2, 1, 1, 4, 1)
    assert m["discrete_win_rate"] == pytest.approx(62.5)
    assert m["length_controlled_winrate"] is None and m["length_controlled_unavailable"] == "not asked for"
    json.dumps(m)  # plain numbers


def test_weighted_preferences_have_a_different_discrete_win_rate():
    m = ae.winrate_metrics([annotation(p) for p in (1.8, 1.6, 1.2)], length_controlled=False)
    assert m["win_rate"] == pytest.approx(100 * (0.8 + 0.6 + 0.2) / 3)
    assert m["discrete_win_rate"] == pytest.approx(100 * 2 / 3)  # rounded: win, win, loss
    assert (m["n_wins"], m["n_wins_base"]) == (2, 1)


def test_no_preference_at_all_gives_no_rates():
    m = ae.winrate_metrics([annotation(None), annotation(None)])
    assert m["win_rate"] is None and m["n_total"] == 0 and m["n_missing"] == 2


def test_the_instruction_position_is_the_frame_index_alpaca_evals_glm_reads():
    df = ae._frame([annotation(2, **{ae.INDEX_KEY: 7}), annotation("1", **{ae.INDEX_KEY: 803})])
    assert df.index.tolist() == [7, 803] and df["preference"].tolist() == [2.0, 1.0]
    assert df.reset_index()["index"].tolist() == [7, 803]  # what get_length_controlled_winrate uses


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for AlpacaEval's downloads, with the hub offline."""
    from alpaca_eval import constants
    from huggingface_hub import constants as hf_constants

    ae.alpaca_eval_metrics()
    monkeypatch.setattr(constants, "DEFAULT_CACHE_DIR", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_length_controlled_rate_says_what_it_needs_when_offline(hub_cache):
    m = ae.winrate_metrics([annotation(p, **{ae.INDEX_KEY: i}) for i, p in enumerate([2, 1, 2, 1, 1.5, 2])])
    assert m["length_controlled_winrate"] is None and m["win_rate"] == pytest.approx(100 * 3.5 / 6)
    assert "df_gamed.csv" in m["length_controlled_unavailable"]
    assert "tatsu-lab/alpaca_eval" in m["length_controlled_unavailable"]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn on the arguments alpaca_eval passes
def test_length_controlled_rate_runs_alpaca_evals_glm_when_its_file_is_cached(hub_cache):
    """A synthetic df_gamed.csv (the real one is on the hub) in the layout the hub cache uses: checks
    that srscale's annotations reach AlpacaEval's GLM and its numbers come back, not their value."""
    import numpy as np

    rng = np.random.default_rng(0)
    snapshot = hub_cache / "datasets--tatsu-lab--alpaca_eval" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (hub_cache / "datasets--tatsu-lab--alpaca_eval" / "refs").mkdir()
    (hub_cache / "datasets--tatsu-lab--alpaca_eval" / "refs" / "main").write_text("0" * 40)
    difficulty = rng.normal(size=805)
    gamed = pd.concat([pd.DataFrame({"model": name, "index": np.arange(805), "instruction_difficulty": difficulty,
                                     "std_delta_len": rng.normal(size=805) + shift,
                                     "preference": rng.uniform(size=805), "not_gamed_baseline": False})
                       for name, shift in (("gamed_long", 1.0), ("gamed_short", -1.0))])
    gamed.to_csv(snapshot / "df_gamed.csv", index=False)
    rows = [annotation(2 if i % 3 else 1, out1="r" * 50, out2="m" * (20 + 3 * i), **{ae.INDEX_KEY: 20 * i})
            for i in range(30)]
    m = ae.winrate_metrics(rows)
    assert "length_controlled_unavailable" not in m
    assert 0 < m["length_controlled_winrate"] < 100 and m["lc_standard_error"] > 0
    assert m["win_rate"] == pytest.approx(100 * 20 / 30)


def test_the_official_alpaca_7b_annotations_give_its_leaderboard_row(shared_data):
    """AlpacaEval 2.0's own annotations of alpaca-7b (weighted GPT-4-turbo annotator) against the row of its
    leaderboard that the alpaca_eval package ships. Needs that file in the shared data."""
    path = shared_data / "alpaca_eval" / "results" / "alpaca-7b" / "weighted_alpaca_eval_gpt4_turbo" / "annotations.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in the shared data (tatsu-lab/alpaca_eval results/alpaca-7b/...)")
    package = Path(ae.alpaca_eval_metrics().__file__).parents[1]
    board = package / "leaderboards" / "data_AlpacaEval_2" / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
    row = pd.read_csv(board, index_col=0).loc["alpaca-7b"]
    m = ae.winrate_metrics(ae.read_annotations(path), length_controlled=False)
    for key in ("win_rate", "standard_error", "discrete_win_rate"):
        assert m[key] == pytest.approx(row[key], rel=1e-9)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"]) == (row["n_wins"], row["n_wins_base"],
                                                                           row["n_draws"], row["n_total"])
