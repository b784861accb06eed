"""Grouping runs by configuration, iteration variants, pass rates and gains: pure, on hand-made frames."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from srscale.analysis.aggregate import (
    Tables,
    expand,
    final_rows,
    gains,
    largest_variant,
    pass_rates,
    run_variants,
    summarize,
    variant_outcome,
    with_derived,
)
from srscale.analysis.study import lora_rank, parse_variants, run_record

T_975_2 = 4.302652729749464


def run(run_id, config, seed, variants=(2,), outcome="passed", stage=None, params=1e6):
    return {"run_id": run_id, "run_name": f"{config}|seed={seed}", "status": "FINISHED", "config_id": config,
            "config_label": config, "model": config.split("|")[0], "lora": config.split("|")[1],
            "lora_r": None, "protocol": "default", "seed": seed, "params": params, "gate_outcome": outcome,
            "gate_stage": stage, "variants": variants}


def history(points):
    """``{run_id: {metric: [v0, v1, ...]}}`` -> long frame, step = list index (None = not logged)."""
    rows = [(rid, m, step, v) for rid, metrics in points.items() for m, values in metrics.items()
            for step, v in enumerate(values) if v is not None]
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


# ------------------------------------------------------------------------------------ run records
@pytest.mark.parametrize("outcome, stage, T, expected", [
    ("passed", None, 5, "passed"),
    ("disqualified", "probe", 1, "disqualified"),
    ("disqualified", "probe_1", 3, "disqualified"),  # failed again after remediation
    ("disqualified", "iter_3", 2, "passed"),  # the first two iterations all passed the gate
    ("disqualified", "iter_3", 3, "disqualified"),
    ("disqualified", "iter_3", 5, "disqualified"),
    (None, None, 3, None),  # no outcome tag: unknown, not a failure
])
def test_variant_outcome(outcome, stage, T, expected):
    assert variant_outcome(outcome, stage, T) == expected


@pytest.mark.parametrize("text, expected", [("1,3,5", (1, 3, 5)), ("5,1,1", (1, 5)), ("3", (3,)), ("", None),
                                            (None, None), ("a,b", None)])
def test_parse_variants(text, expected):
    assert parse_variants(text) == expected


def test_run_record_reads_the_pipeline_contract():
    tags = {"config_id": "abc123", "config_label": "tinyllama|r16|cs224n", "protocol": "cs224n",
            "model_params": "1100048384", "gate_outcome": "disqualified", "gate_stage": "iter_2",
            "iteration_variants": "1,3,5", "model_id": "TinyLlama/x", "device": "cuda", "generation_backend": "vllm"}
    params = {"model.name": "tinyllama", "lora.name": "r16", "lora.enabled": "True", "lora.r": "16", "seed": "2",
              "self_reward.iterations": "5"}
    rec = run_record("rid", "tinyllama|r16|seed=2|cs224n", "FINISHED", tags, params)
    assert rec["config_id"] == "abc123" and rec["config_label"] == "tinyllama|r16|cs224n"
    assert (rec["model"], rec["lora"], rec["lora_r"], rec["protocol"], rec["seed"]) == ("tinyllama", "r16", 16,
                                                                                      "cs224n", 2)
    assert rec["params"] == 1100048384.0 and rec["variants"] == (1, 3, 5)
    assert (rec["gate_outcome"], rec["gate_stage"], rec["device"]) == ("disqualified", "iter_2", "cuda")


def test_run_record_falls_back_for_runs_without_the_new_tags():
    params = {"model.name": "tiny_4m", "lora.name": "full", "lora.enabled": "False", "lora.r": "16",
              "self_reward.iterations": "3"}
    tags = {"hydra_overrides": "model=tiny_4m,+experiment=cs224n", "model_params": "4500000"}
    rec = run_record("rid", "tiny_4m|seed=7", "FINISHED", tags, params)
    assert rec["config_label"] == "tiny_4m|full|cs224n" and rec["config_id"] == "tiny_4m|full|cs224n"
    assert rec["protocol"] == "cs224n" and rec["lora_r"] is None  # full fine-tuning has no rank
    assert rec["seed"] == 7 and rec["variants"] == (3,)
    plain = run_record("rid", "x", "FINISHED", {}, {"model.name": "m", "lora.name": "r8", "seed": "0"})
    assert (plain["config_label"], plain["protocol"], plain["params"], plain["variants"]) == ("m|r8", "default",
                                                                                            None, None)


def test_lora_rank():
    assert lora_rank({"lora.enabled": "True", "lora.r": "32"}) == 32
    assert lora_rank({"lora.enabled": "false", "lora.r": "32"}) is None
    assert lora_rank({}) is None


# ------------------------------------------------------------------------------------ variants
def test_a_run_stands_for_each_of_its_variants_with_steps_up_to_T():
    runs = pd.DataFrame([run("a", "m|full", 0, variants=(1, 3))])
    hist = history({"a": {"eval/task/accuracy": [0.1, 0.2, 0.3, 0.4], "iter/valid_pairs": [None, 5, 6, 7]}})
    rows = expand(runs, hist)
    t1 = rows[rows["T"] == 1]
    assert sorted(t1["step"]) == [0, 1, 1]  # accuracy at steps 0 and 1, pairs at step 1
    assert sorted(t1[t1["metric"] == "eval/task/accuracy"]["value"]) == [0.1, 0.2]
    assert sorted(rows[rows["T"] == 3]["step"].unique()) == [0, 1, 2, 3]
    assert len(rows) == 3 + 7  # T=1: 2 + 1; T=3: 4 + 3


def test_a_run_without_variants_stands_for_its_last_step():
    runs = pd.DataFrame([run("a", "m|full", 0, variants=None)])
    hist = history({"a": {"eval/task/accuracy": [0.1, 0.2, 0.3]}})
    assert run_variants(runs, hist)["T"].tolist() == [2]


def test_variant_outcomes_follow_the_gate_stage():
    runs = pd.DataFrame([run("a", "m|full", 0, variants=(1, 3, 5), outcome="disqualified", stage="iter_4")])
    v = run_variants(runs, history({}))
    assert dict(zip(v["T"], v["outcome"], strict=True)) == {1: "passed", 3: "passed", 5: "disqualified"}


# ------------------------------------------------------------------------------------ statistics
def three_seeds():
    runs = pd.DataFrame([run(f"s{s}", "m|full", s) for s in range(3)] + [run("x0", "big|r16", 0, params=1e9)])
    hist = history({
        "s0": {"eval/task/accuracy": [0.1, 0.15, 0.2], "cost/cumulative/flops": [1.0, 2.0, 3.0]},
        "s1": {"eval/task/accuracy": [0.2, 0.3, 0.4], "cost/cumulative/flops": [1.0, 2.0, 5.0]},
        "s2": {"eval/task/accuracy": [0.3, 0.3, 0.3], "cost/cumulative/flops": [1.0, 2.0, 4.0]},
        "x0": {"eval/task/accuracy": [0.5, 0.6, 0.9]},
    })
    return runs, hist


def test_summarize_gives_mean_and_t_interval_per_configuration_and_step():
    runs, hist = three_seeds()
    s = summarize(expand(runs, hist)).set_index(["config_id", "metric", "step"])
    at2 = s.loc[("m|full", "eval/task/accuracy", 2)]
    half = T_975_2 * 0.1 / math.sqrt(3)  # values 0.2, 0.4, 0.3: sd 0.1
    assert at2["n"] == 3 and at2["mean"] == pytest.approx(0.3)
    assert (at2["low"], at2["high"]) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    single = s.loc[("big|r16", "eval/task/accuracy", 2)]
    assert single["n"] == 1 and single["mean"] == pytest.approx(0.9)
    assert pd.isna(single["low"]) and pd.isna(single["high"])  # one seed: no interval


def test_gain_over_sft_is_paired_within_each_seed():
    runs, hist = three_seeds()
    g = gains(expand(runs, hist), "eval/task/accuracy").set_index(["config_id", "step"])
    row = g.loc[("m|full", 2)]
    # per-seed gains at step 2: 0.1, 0.2, 0.0 -> mean 0.1, sd 0.1
    half = T_975_2 * 0.1 / math.sqrt(3)
    assert row["gain"] == pytest.approx(0.1) and row["n"] == 3
    assert (row["gain_low"], row["gain_high"]) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    # the cost beside it: cumulative FLOPs at step 2, 3, 5, 4 -> mean 4, sd 1
    assert row["cost"] == pytest.approx(4.0)
    assert row["cost_high"] - 4.0 == pytest.approx(T_975_2 / math.sqrt(3))
    assert g.loc[("big|r16", 2), "gain"] == pytest.approx(0.4) and pd.isna(g.loc[("big|r16", 2), "cost"])
    assert 0 not in g.reset_index()["step"].tolist()


def test_intervals_stop_at_the_range_each_metric_can_take():
    runs = pd.DataFrame([run(k, "m|full", k) for k in "abc"])
    hist = history({"a": {"eval/rm/parse_rate": [0.95, 0.0], "iter/dpo_reward_margin": [0.0, -0.5]},
                    "b": {"eval/rm/parse_rate": [0.99, 1.0], "iter/dpo_reward_margin": [0.1, 0.5]},
                    "c": {"eval/rm/parse_rate": [1.0, 1.0], "iter/dpo_reward_margin": [0.0, 0.0]}})
    rows = expand(runs, hist)
    s = summarize(rows).set_index(["metric", "step"])
    assert s.loc[("eval/rm/parse_rate", 0), "high"] == 1.0  # the t interval reaches 1.04
    assert s.loc[("eval/rm/parse_rate", 0), "low"] == pytest.approx(0.98 - T_975_2 * s.loc[("eval/rm/parse_rate", 0), "sd"]
                                                                     / math.sqrt(3))
    assert s.loc[("eval/rm/parse_rate", 1), "low"] == 0.0
    margin = s.loc[("iter/dpo_reward_margin", 1)]  # unbounded: the plain t interval
    assert margin["low"] == pytest.approx(-T_975_2 * 0.5 / math.sqrt(3))
    g = gains(rows, "eval/rm/parse_rate").set_index("step")  # per seed -0.95, +0.01, 0: t gives [-1.68, 1.05]
    assert (g.loc[1, "gain_low"], g.loc[1, "gain_high"]) == (-1.0, 1.0)  # a gain of a fraction lies in [-1, 1]
    assert g.loc[1, "gain"] == pytest.approx(-0.94 / 3)


def test_the_judges_margin_over_chance_is_paired_within_each_run():
    runs = pd.DataFrame([run(k, "m|full", i) for i, k in enumerate("abc")])
    hist = history({"a": {"eval/rm/pairwise_accuracy": [0.57, 0.60], "eval/rm/pairwise_chance": [0.38, 0.40]},
                    "b": {"eval/rm/pairwise_accuracy": [0.41, None], "eval/rm/pairwise_chance": [0.26, 0.30]},
                    "c": {"eval/rm/pairwise_accuracy": [0.20, 0.30]}})  # no chance level logged: no margin
    derived = with_derived(hist)
    margin = derived[derived["metric"] == "eval/rm/pairwise_over_chance"].set_index(["run_id", "step"])["value"]
    assert margin.to_dict() == {("a", 0): pytest.approx(0.19), ("a", 1): pytest.approx(0.20),
                                ("b", 0): pytest.approx(0.15)}
    assert len(derived) == len(hist) + 3  # the logged rows are kept as they were
    s = Tables.from_frames(runs, hist).summary.set_index(["metric", "step"])
    at_sft = s.loc[("eval/rm/pairwise_over_chance", 0)]
    assert at_sft["n"] == 2 and at_sft["mean"] == pytest.approx(0.17)
    # the paired interval: t over the two margins 0.19 and 0.15 (sd 0.0283), not over the two means
    assert at_sft["high"] - at_sft["mean"] == pytest.approx(12.706204736174694 * 0.04 / math.sqrt(2) / math.sqrt(2))
    assert with_derived(hist.iloc[0:0]).empty


def test_a_run_without_an_sft_value_has_no_gain():
    runs = pd.DataFrame([run("a", "m|full", 0), run("b", "m|full", 1)])
    hist = history({"a": {"eval/task/accuracy": [None, 0.5, 0.6]}, "b": {"eval/task/accuracy": [0.1, 0.2, 0.4]}})
    g = gains(expand(runs, hist), "eval/task/accuracy").set_index("step")
    assert g.loc[2, "n"] == 1 and g.loc[2, "gain"] == pytest.approx(0.3)
    assert gains(expand(runs, hist), "eval/rm/pairwise_accuracy").empty


def test_pass_rates_count_seeds_per_configuration_and_variant():
    runs = pd.DataFrame([run("a", "m|full", 0, variants=(1, 3)),
                         run("b", "m|full", 1, variants=(1, 3), outcome="disqualified", stage="iter_2"),
                         run("c", "m|full", 2, variants=(1, 3), outcome="disqualified", stage="probe"),
                         run("d", "n|full", 0, variants=(3,), outcome=None)])
    p = pass_rates(run_variants(runs, history({}))).set_index(["config_id", "T"])
    assert (p.loc[("m|full", 1), "passed"], p.loc[("m|full", 1), "n"]) == (2, 3)
    assert (p.loc[("m|full", 3), "passed"], p.loc[("m|full", 3), "n"]) == (1, 3)
    assert p.loc[("m|full", 3), "low"] == pytest.approx(0.0615, abs=1e-4)  # Wilson 1/3
    assert ("n|full", 3) not in p.index  # no gate outcome: not counted either way


def test_largest_variant_and_final_rows():
    runs = pd.DataFrame([run("a", "m|full", 0, variants=(1, 2))])
    hist = history({"a": {"eval/task/accuracy": [0.1, 0.2, 0.3]}})
    s = summarize(expand(runs, hist))
    assert sorted(largest_variant(s)["step"]) == [0, 1, 2] and set(largest_variant(s)["T"]) == {2}
    f = final_rows(s)
    assert dict(zip(f["T"], f["mean"], strict=True)) == {1: pytest.approx(0.2), 2: pytest.approx(0.3)}


def test_tables_join_the_configuration_and_sort_by_size():
    runs, hist = three_seeds()
    t = Tables.from_frames(runs, hist)
    assert t.configs["config_id"].tolist() == ["m|full", "big|r16"]
    assert t.configs.set_index("config_id").loc["m|full", "seeds"] == (0, 1, 2)
    assert t.summary["config_label"].iloc[0] == "m|full" and {"params", "lora"} <= set(t.summary.columns)
    assert t.passes["rate"].tolist() == [1.0, 1.0]
    assert t.metrics() == ["cost/cumulative/flops", "eval/task/accuracy"]
    empty = Tables.from_frames(runs.iloc[:0], hist.iloc[:0])
    assert empty.summary.empty and empty.passes.empty and empty.metrics() == []
