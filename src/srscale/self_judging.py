"""The judging stage: a model judges (prompt, response) items with the judge prompt, K samples each.

Used by the gate probe, every iteration's self-judging, the reward-model evaluation and the OASST EFT
construction. Only generated tokens are parsed (:func:`srscale.judging.parse_score`). With a gate, the
judgments are fed to it **in the order of the judged items** (item 0's K samples, then item 1's, ...),
whatever order the sampler computes them in, and generation stops within one batch of the trip; the
records returned are exactly the judgments the gate saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from srscale import judging
from srscale.sampling import Sampler, SamplingParams, TokenCount, render_chat, user_turn


@dataclass
class JudgeResult:
    records: list[dict]  # {"item", "sample", "text", "score", "truncated", "input_truncated"}
    tokens: TokenCount = field(default_factory=TokenCount)

    def scores(self) -> list[float | None]:
        return [r["score"] for r in self.records]

    def truncated_rate(self) -> float | None:
        """Share of judgments cut off by the token budget before they ended."""
        return sum(r["truncated"] for r in self.records) / len(self.records) if self.records else None

    def input_truncated(self) -> int:
        """Judged items whose filled judge prompt was cut on the left to fit the model's length."""
        return len({r["item"] for r in self.records if r["input_truncated"]})


def judge_texts(sampler: Sampler, template: str, items: list[tuple[str, str]]) -> list[str]:
    """The filled, chat-templated judge prompt of each (prompt, response) item."""
    return [render_chat(sampler.tokenizer, user_turn(judging.build_judge_prompt(template, p, r))) for p, r in items]


def judge_items(sampler: Sampler, judge_cfg, items: list[tuple[str, str]], *, samples: int, seed: int,
                gate: judging.ConsecutiveFailureGate | None = None, desc: str = "judge",
                temperature: float | None = None, max_input_tokens: int | None = None) -> JudgeResult:
    """Judge each item ``samples`` times (``judge_cfg``: template, max_new_tokens, temperature, top_p)."""
    temp = judge_cfg.temperature if temperature is None else temperature
    params = SamplingParams(judge_cfg.max_new_tokens, temp, judge_cfg.top_p if temp > 0 else 1.0, n=samples)
    records: list[dict] = []

    def on_result(i: int, completions) -> bool:
        for k, c in enumerate(completions):
            score = judging.parse_score(c.text)
            records.append({"item": i, "sample": k, "text": c.text, "score": score, "truncated": c.truncated,
                            "input_truncated": c.input_truncated})
            if gate is not None and gate.update(score is not None):
                return True  # the trip: this item's later samples and every later item are never judged
        return False

    texts = judge_texts(sampler, judge_cfg.template, items)
    if gate is None:  # nothing can stop early: one call, which an engine may batch as it likes (vLLM: unchunked)
        results = sampler.generate(texts, params, seed=seed, desc=desc, max_input_tokens=max_input_tokens)
        for i, completions in enumerate(results):
            on_result(i, completions)
    else:
        results = sampler.generate(texts, params, seed=seed, desc=desc, on_result=on_result,
                                   max_input_tokens=max_input_tokens)
    return JudgeResult(records, TokenCount().add(results))


def scores_by_item(records: list[dict], n_items: int) -> list[list[float | None]]:
    """Each item's judge scores (None: that sample failed to parse), in sample order."""
    out: list[list[float | None]] = [[] for _ in range(n_items)]
    for r in records:
        out[r["item"]].append(r["score"])
    return out
