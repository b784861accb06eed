"""The judging stage: the gate sees judgments in item order whatever the batching; truncation counts;
the judge's token budget must fit what its prompt asks for."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import ScriptedSampler
from srscale.errors import SrscaleError
from srscale.judging import ConsecutiveFailureGate
from srscale.pipeline import check_judge_budget, judge_tokens_needed, judge_words_asked
from srscale.self_judging import judge_items
from srscale.tinymodel import train_tokenizer

TEMPLATE = "Judge.\nUser: {prompt}\nResponse: {response}\nEnd with Score: <n>"


@pytest.fixture(scope="module")
def tokenizer():
    corpus = ["Score: 3 The answer is right. garbage text here item number"] * 50
    tok = train_tokenizer(corpus + [TEMPLATE] * 20, vocab_size=400)
    tok.padding_side = "left"
    return tok


def _sampler(tokenizer, replies: dict[str, str], batch_size: int) -> ScriptedSampler:
    """A sampler writing a fixed reply per item (found by the item's tag in the judge prompt): the
    outputs cannot depend on batching."""
    def reply(text: str, i: int, j: int) -> str:
        return replies[next((t for t in replies if f"[{t}]" in text), next(iter(replies)))]

    return ScriptedSampler(tokenizer, reply, batch_size)


JUDGE = SimpleNamespace(template=TEMPLATE, max_new_tokens=12, temperature=0.7, top_p=0.9)


def _items(pattern: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """One item per character: ``o`` judged fine, ``x`` unparseable; prompts of very different lengths
    so that a length-sorted batching would reorder them."""
    items, replies = [], {}
    for i, ch in enumerate(pattern):
        tag = f"item{i}"
        items.append((f"[{tag}] " + "word " * ((i * 7) % 13), "some response"))
        replies[tag] = "Score: 3" if ch == "o" else "garbage text"
    return items, replies


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 8, 64])
def test_the_gate_trips_at_the_same_item_under_any_batch_size(tokenizer, batch_size: int) -> None:
    pattern = "oxxo" + "x" * 11 + "ooooo"  # the 11th consecutive failure is item 14, the 15th judgment
    items, replies = _items(pattern)
    sampler = _sampler(tokenizer, replies, batch_size)
    gate = ConsecutiveFailureGate(max_consecutive=10)
    result = judge_items(sampler, JUDGE, items, samples=1, seed=0, gate=gate)
    assert gate.tripped and gate.tripped_at == 15 and gate.total == 15
    assert [r["item"] for r in result.records] == list(range(15))  # exactly what the gate saw, in item order
    assert [r["score"] is None for r in result.records] == [c == "x" for c in pattern[:15]]
    assert len(sampler.calls) <= min(len(items), 15 + batch_size - 1)  # stopped within one batch of the trip


def test_without_a_gate_every_item_is_judged_in_order(tokenizer) -> None:
    items, replies = _items("xoxo" * 5)
    sampler = _sampler(tokenizer, replies, 3)
    callbacks, generate = [], sampler.generate
    sampler.generate = lambda *a, **k: callbacks.append(k.get("on_result")) or generate(*a, **k)
    result = judge_items(sampler, JUDGE, items, samples=2, seed=0)
    assert [(r["item"], r["sample"]) for r in result.records] == [(i, k) for i in range(20) for k in range(2)]
    assert [r["score"] is None for r in result.records] == [c == "x" for c in "xoxo" * 5 for _ in range(2)]
    assert result.truncated_rate() == 0.0 and result.input_truncated() == 0
    assert callbacks == [None]  # nothing can stop it, so the engine gets one unchunked call


def test_a_judgment_cut_by_the_budget_is_counted_as_truncated(tokenizer) -> None:
    items, replies = _items("oo")
    replies["item1"] = "garbage text here item number garbage text here item number garbage"
    result = judge_items(_sampler(tokenizer, replies, 4), JUDGE, items, samples=1, seed=0)
    assert [r["truncated"] for r in result.records] == [False, True]
    assert result.truncated_rate() == 0.5
    assert result.records[1]["score"] is None  # cut before it could declare a score
    cut = judge_items(_sampler(tokenizer, replies, 4), JUDGE, items, samples=1, seed=0, max_input_tokens=8)
    assert cut.input_truncated() == 2 and all(r["input_truncated"] for r in cut.records)


def test_the_words_a_judge_prompt_asks_for() -> None:
    assert judge_words_asked("- Briefly justify your total score, up to 100 words.") == 100
    assert judge_words_asked("justify, Up to 20 words. Then up to 30 words more") == 30
    assert judge_words_asked("Score: <n>") is None


def test_a_budget_below_what_the_prompt_asks_fails_in_one_line(tokenizer) -> None:
    template = "Review {prompt} {response}. Briefly justify your total score, up to 100 words. Score:"
    needed = judge_tokens_needed(template, tokenizer)
    assert needed > 100  # a byte-level BPE of 400 merges spends more than a token per English word
    cfg = SimpleNamespace(judge=SimpleNamespace(template=template, max_new_tokens=needed - 1))
    with pytest.raises(SrscaleError) as err:
        check_judge_budget(cfg, tokenizer)
    assert "\n" not in str(err.value) and f"judge.max_new_tokens={needed}" in str(err.value)
    cfg.judge.max_new_tokens = needed
    check_judge_budget(cfg, tokenizer)  # fits: no error
    cfg.judge.template = "Review {prompt} {response}. Score:"
    cfg.judge.max_new_tokens = 1
    check_judge_budget(cfg, tokenizer)  # no word limit asked: nothing to check
