"""Head-to-head win rates: pure verdict parsing, the both-orders protocol (a judge over a real
loopback HTTP server, and fake judges), and win rate against real AlpacaEval reference outputs."""

from __future__ import annotations

import json
import re

import pytest

from srscale.errors import SrscaleError
from srscale.evaluation import headtohead as h2h
from srscale.evaluation.judges import OpenAIChatJudge
from srscale.evaluation.mtbench import load_judge_prompts
from test_judges import ChatServer


@pytest.fixture(scope="module")
def judge_prompts(shared_data):
    return load_judge_prompts(shared_data / "mt_bench" / "judge_prompts.jsonl")


@pytest.fixture(scope="module")
def alpaca_file(shared_data):
    return shared_data / "alpaca_eval" / "results" / "gpt4_1106_preview" / "model_outputs.json"


ANSWERS_RE = re.compile(
    r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A's Answer\].*"
    r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B's Answer\]",
    re.S,
)


class FakeJudge:
    """Decides from the two answers in a pair-v2 prompt with ``rule(answer_a, answer_b) -> text``."""

    name = "fake"

    def __init__(self, rule):
        self.rule = rule
        self.requests = []

    def complete(self, system, user, max_tokens):
        return self.complete_batch([(system, user)], max_tokens)[0]

    def complete_batch(self, requests, max_tokens):
        self.requests.extend(requests)
        return [self.rule(*ANSWERS_RE.search(u).groups()) for _, u in requests]


def prefer_longer(a, b):
    return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"


# ------------------------------------------------------------------------------------ pure
@pytest.mark.parametrize(
    "text, verdict",
    [
        ("A is more helpful. [[A]]", "A"),
        ("[[B]]", "B"),
        ("They are equally good: [[C]]", "tie"),
        ("If A were better I'd say [[A]]; final verdict: [[B]]", "B"),  # the last verdict counts
        ("Assistant A", None),
        ("[A]", None),
        ("[[D]]", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_verdict(text, verdict):
    assert h2h.parse_verdict(text) == verdict


@pytest.mark.parametrize(
    "first, second, outcome",
    [
        ("A", "B", "win"),  # A preferred in both positions
        ("B", "A", "loss"),  # B preferred in both positions
        ("A", "A", "tie"),  # always the first position: inconsistent across orders
        ("B", "B", "tie"),  # always the second position
        ("tie", "B", "tie"),
        ("A", "tie", "tie"),
        ("tie", "tie", "tie"),
        (None, "A", None),
        ("A", None, None),
    ],
)
def test_combine_orders(first, second, outcome):
    assert h2h.combine_orders(first, second) == outcome


def test_tally_win_rate_and_lengths():
    r = h2h.tally(
        ["win", "win", "loss", "tie", None], ["aa bb", "c", "", "dddd", "e"], ["x y z", "", "", "", ""]
    )
    assert (r.wins, r.losses, r.ties, r.failed, r.n) == (2, 1, 1, 1, 4)
    assert r.win_rate == pytest.approx((2 + 0.5 * 1) / 4)
    assert r.length_a_chars == pytest.approx((5 + 1 + 0 + 4 + 1) / 5)
    assert r.length_a_words == pytest.approx((2 + 1 + 0 + 1 + 1) / 5)
    assert r.length_b_words == pytest.approx(3 / 5)
    m = r.metrics("h2h/sft_vs_m1")
    assert m["h2h/sft_vs_m1/win_rate"] == pytest.approx(0.625) and m["h2h/sft_vs_m1/failed"] == 1
    assert h2h.tally([None], ["a"], ["b"]).win_rate is None
    assert "h2h/win_rate" not in h2h.tally([None], ["a"], ["b"]).metrics()


# ------------------------------------------------------------------------------------ protocol
def test_position_biased_judge_gives_ties(judge_prompts):
    judge = FakeJudge(lambda a, b: "Assistant A is better. [[A]]")
    r = h2h.compare(
        judge, ["q1", "q2", "q3"], ["short", "a much longer answer", "x"], ["b1", "b2", "b3"], judge_prompts
    )
    assert (r.wins, r.losses, r.ties, r.failed) == (0, 0, 3, 0)
    assert r.win_rate == 0.5
    assert len(judge.requests) == 6


def test_consistent_judge_gives_wins_and_losses(judge_prompts):
    prompts = ["q1", "q2", "q3", "q4"]
    a = ["long answer here", "s", "same", "long answer too"]
    b = ["s", "long answer here", "same", "no"]
    r = h2h.compare(FakeJudge(prefer_longer), prompts, a, b, judge_prompts)
    assert (r.wins, r.losses, r.ties) == (2, 1, 1)
    assert r.win_rate == pytest.approx(2.5 / 4)
    assert [i["outcome"] for i in r.items] == ["win", "loss", "tie", "win"]
    assert r.items[0]["g1_verdict"] == "A" and r.items[0]["g2_verdict"] == "B"
    assert r.length_a_chars == pytest.approx(sum(map(len, a)) / 4)
    assert r.length_b_words == pytest.approx((1 + 3 + 1 + 1) / 4)


def test_compare_over_http_judges_both_orders(judge_prompts):
    def responder(body):
        a, b = ANSWERS_RE.search(body["messages"][-1]["content"]).groups()
        if "garbled" in a + b:
            return "I cannot decide."  # no verdict: the item fails, it is not a tie
        return "The better one is clear. [[A]]" if "good" in a else "[[B]]"

    prompts = ["p1", "p2", "p3"]
    with ChatServer(responder) as server:
        judge = OpenAIChatJudge("judge-x", base_url=server.base_url, retry_sleep=0.01)
        r = h2h.compare(
            judge, prompts, ["good one", "meh", "garbled"], ["meh", "good one", "fine"], judge_prompts
        )
    assert (r.wins, r.losses, r.ties, r.failed) == (1, 1, 0, 1)
    assert r.win_rate == 0.5 and r.n == 2
    assert len(server.requests) == 6
    pair = judge_prompts["pair-v2"]
    sent = [req["json"]["messages"] for req in server.requests]
    assert all(m[0] == {"role": "system", "content": pair["system_prompt"]} for m in sent)
    users = {m[1]["content"] for m in sent}
    assert pair["prompt_template"].format(question="p1", answer_a="good one", answer_b="meh") in users
    assert pair["prompt_template"].format(question="p1", answer_a="meh", answer_b="good one") in users


def test_compare_checks_lengths(judge_prompts):
    with pytest.raises(SrscaleError, match="2 prompts but 1 and 2 answers"):
        h2h.compare(FakeJudge(prefer_longer), ["a", "b"], ["x"], ["y", "z"], judge_prompts)
    with pytest.raises(SrscaleError, match="pair-v2"):
        h2h.compare(FakeJudge(prefer_longer), ["a"], ["x"], ["y"], {})


# ------------------------------------------------------------------------------------ AlpacaEval
def test_alpaca_eval_winrate_against_references(alpaca_file, judge_prompts):
    rows = h2h.load_alpaca_eval(alpaca_file)
    assert len(rows) == 805
    chosen = h2h.spread(rows, 5)
    assert len({r["instruction"] for r in chosen}) == 5
    assert len({r["dataset"] for r in chosen}) >= 3  # spread over AlpacaEval's source sets

    calls = []

    def chat(conversations, max_new_tokens):
        calls.append((conversations, max_new_tokens))
        return [" Sure. " for _ in conversations]

    judge = FakeJudge(prefer_longer)
    r = h2h.alpaca_eval_winrate(
        judge, chat, alpaca_file, max_items=5, max_new_tokens=32, judge_prompts=judge_prompts,
        generator="tiny|iter_1", length_controlled=False,
    )
    assert len(calls) == 1 and calls[0][1] == 32
    assert [c[0]["content"] for c in calls[0][0]] == [x["instruction"] for x in chosen]
    assert (r.wins, r.losses, r.ties) == (0, 5, 0) and r.win_rate == 0.0
    assert r.alpaca_eval["win_rate"] == 0.0 and r.alpaca_eval["n_total"] == 5  # computed by alpaca_eval
    assert r.alpaca_eval["length_controlled_unavailable"] == "not asked for"
    ann = r.annotations
    assert [a["preference"] for a in ann] == [1.0] * 5  # the reference (output_1) won every time
    assert [a["alpaca_eval_index"] for a in ann] == [0, 161, 322, 483, 644]  # positions in the 805
    assert {a["generator_1"] for a in ann} == {"gpt4_1106_preview"} and {a["generator_2"] for a in ann} == {
        "tiny|iter_1"}
    assert [a["output_1"] for a in ann] == [x["output"] for x in chosen] and ann[0]["output_2"] == "Sure."
    assert [a["dataset"] for a in ann] == [x["dataset"] for x in chosen]
    m = r.metrics("h2h/alpaca_eval")
    assert m["h2h/alpaca_eval/win_rate"] == 0.0 and m["h2h/alpaca_eval/discrete_win_rate"] == 0.0
    assert "h2h/alpaca_eval/length_controlled_win_rate" not in m
    assert r.length_a_chars == len("Sure.")
    assert r.length_b_chars == pytest.approx(sum(len(x["output"]) for x in chosen) / 5)
    assert r.length_b_words == pytest.approx(sum(len(x["output"].split()) for x in chosen) / 5)
    assert len(judge.requests) == 10

    # records work as well as a path
    r2 = h2h.alpaca_eval_winrate(judge, chat, rows[:2], max_items=None, judge_prompts=judge_prompts,
                                 length_controlled=False)
    assert r2.n == 2


def test_alpaca_eval_rates_come_from_alpaca_eval_and_agree_with_the_protocol(alpaca_file, judge_prompts):
    """Answers of growing length against the references, judged by length: the package's win rate and
    standard error equal (wins + ties / 2) / n and the standard error of the per-item scores."""
    import statistics

    rows = h2h.spread(h2h.load_alpaca_eval(alpaca_file), 12)
    lengths = sorted(len(r["output"]) for r in rows)
    target = lengths[len(lengths) // 2]  # longer than about half the references

    def chat(conversations, max_new_tokens):
        return ["y" * target for _ in conversations]

    r = h2h.alpaca_eval_winrate(FakeJudge(prefer_longer), chat, rows, judge_prompts=judge_prompts,
                                length_controlled=False)
    scores = [1.0] * r.wins + [0.0] * r.losses + [0.5] * r.ties
    assert r.wins and r.losses and r.n == 12
    assert r.win_rate == pytest.approx((r.wins + 0.5 * r.ties) / r.n)
    assert r.alpaca_eval["standard_error"] == pytest.approx(100 * statistics.stdev(scores) / len(scores) ** 0.5)
    assert r.metrics()["h2h/standard_error"] == pytest.approx(r.alpaca_eval["standard_error"] / 100)
    assert [a["alpaca_eval_index"] for a in r.annotations] == list(range(12))  # positions in the list given
    assert "annotations" not in r.to_dict() and r.to_dict()["alpaca_eval"]["n_total"] == 12


def test_load_alpaca_eval_errors(tmp_path):
    with pytest.raises(SrscaleError, match="AlpacaEval file not found"):
        h2h.load_alpaca_eval(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instruction": "x"}))
    with pytest.raises(SrscaleError, match="not an AlpacaEval model_outputs.json"):
        h2h.load_alpaca_eval(bad)


def test_spread():
    assert h2h.spread(list(range(10)), 3) == [0, 3, 6]
    assert h2h.spread(list(range(3)), 10) == [0, 1, 2]
    assert h2h.spread(list(range(3)), 0) == []
