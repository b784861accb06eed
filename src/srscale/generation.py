"""The Hugging Face backend of the sampler seam (:mod:`srscale.sampling`), in process.

Decoding runs srscale's own loop over the model's KV cache (:mod:`srscale.hf_decode`): one row per
completion, a text's ``n`` samples sharing one prefill, finished rows leaving the batch in the step
they end and freed slots refilled with the next texts, so no decode step is spent on a finished or
padded row. Sampling is temperature + top-p with ``generate``'s semantics, each completion drawing
from its own stream seeded ``item_seed(seed, i, j)`` (:mod:`srscale.token_sampling`), so outputs do not
depend on ``batch_size`` or on which texts share a batch; greedy is the argmax and matches
``model.generate(do_sample=False)``. The model's own ``generation_config`` (repetition penalty,
top-k, ...) is not applied: :class:`SamplingParams` alone defines sampling.

Order: without ``on_result`` texts are admitted shortest first (little prefill padding); with it
(the gate) in input order, so a stop request lands while at most one batch of rows is in flight.
Only generated tokens are decoded (a judge prompt's own "Score: <total points>" is never parsed), the
end token left out of the text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tqdm.auto import tqdm

from srscale.hf_decode import Decoder, DecodeStats, Decoding, Finished, Request
from srscale.sampling import (
    Completion,
    InOrderDelivery,
    OnResult,
    SamplingParams,
    item_seed,
    render_chat,
    stop_token_ids,
    user_turn,
)

__all__ = ["HFSampler", "SamplingParams", "encode_batch", "generation_threads", "render_chat", "stop_token_ids",
           "user_turn"]


def encode_batch(tokenizer, texts: Sequence[str], max_input_tokens: int | None = None) -> dict:
    """Tokenize templated texts for generation: padded and, past ``max_input_tokens``, cut on the
    left, so every input still ends with its generation prompt (a right cut would drop the
    assistant turn and the model would go on writing the user's text)."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False,
                     truncation=max_input_tokens is not None, max_length=max_input_tokens)


def left_cut(ids: list[int], max_input_tokens: int | None) -> list[int]:
    """The last ``max_input_tokens`` ids (all of them when ``None`` or short enough)."""
    return ids if max_input_tokens is None or len(ids) <= max_input_tokens else ids[len(ids) - max_input_tokens:]


def generation_threads(configured: int | None, usable_cores: int) -> int:
    """torch's intra-op thread count for generation: ``configured`` if set, else every core this
    process may use (more threads than cores slows decoding of small models several-fold)."""
    return configured if configured is not None else max(1, usable_cores)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class HFSampler:
    """Sampler over an in-memory transformers model (and its tokenizer).

    ``batch_size`` is the most completions decoded together; ``refill`` the free slots at which the
    next texts join a running batch (``None``: static groups, each admitted once the last has ended;
    default a quarter of ``batch_size``).
    """

    backend = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 32, *, refill: int | None | str = "auto"):
        import transformers

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.refill = max(1, batch_size // 4) if refill == "auto" else refill
        self.version = transformers.__version__
        self.last_stats = DecodeStats()  # what the latest generate call spent (benchmarks read it)

    def generate(self, texts: Sequence[str], params: SamplingParams, *, seed: int, desc: str = "generate",
                 on_result: OnResult | None = None,
                 max_input_tokens: int | None = None) -> list[list[Completion] | None]:
        if not texts:
            return []
        model, tok = self.model, self.tokenizer
        full = tok(list(texts), add_special_tokens=False)["input_ids"]
        ids = [left_cut(x, max_input_tokens) for x in full]
        empty = [i for i, x in enumerate(ids) if not x]
        if empty:
            raise ValueError(f"texts {empty[:5]} tokenize to no tokens: nothing to continue")
        order = range(len(texts)) if on_result is not None else sorted(range(len(texts)), key=lambda i: len(ids[i]))
        requests = (Request(i, ids[i], tuple(item_seed(seed, i, j) for j in range(params.n))) for i in order)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        settings = Decoding(max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                            top_p=params.top_p, stop_ids=frozenset(stop_token_ids(tok)), pad_id=pad,
                            max_rows=self.batch_size, refill=self.refill)
        delivery = InOrderDelivery(len(texts), on_result)
        done: dict[int, dict[int, Completion]] = {}
        bar = tqdm(total=len(texts) * params.n, desc=desc, leave=False)

        def on_finished(f: Finished) -> bool:
            kept = f.tokens[:-1] if f.stopped else f.tokens
            done.setdefault(f.index, {})[f.sample] = Completion(
                text=tok.decode(kept, skip_special_tokens=True).strip(),
                finish_reason="stop" if f.stopped else "length",
                prompt_tokens=len(ids[f.index]) if f.sample == 0 else 0,  # one prefill per text
                new_tokens=len(f.tokens), input_truncated=len(full[f.index]) > len(ids[f.index]))
            bar.update(1)
            if len(done[f.index]) == params.n:
                got = done.pop(f.index)
                delivery.add(f.index, [got[j] for j in range(params.n)])
            return delivery.stopped

        was_training = model.training
        model.eval()
        try:
            self.last_stats = Decoder(model).run(requests, settings, on_finished)
        finally:
            bar.close()
            if was_training:
                model.train()
        return delivery.results


def chat_fn(sampler, *, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, desc: str = "answer"):
    """A ``chat(conversations, max_new_tokens) -> replies`` callable over a sampler (for evaluations)."""
    from srscale.sampling import texts_of

    def chat(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        texts = [render_chat(sampler.tokenizer, c) for c in conversations]
        results = sampler.generate(texts, SamplingParams(max_new_tokens, temperature, top_p or 1.0), seed=seed,
                                   desc=desc)
        return [t or "" for t in texts_of(results)]

    return chat


# ------------------------------------------------------------------ transitional free functions
def generate_texts(model, tokenizer, texts: Sequence[str], params: SamplingParams, *, batch_size: int = 32,
                   seed: int = 0, desc: str = "generate", on_batch=None,
                   max_input_tokens: int | None = None) -> list[str | None]:
    """Texts of one completion per input, in input order (a thin wrapper over :class:`HFSampler`)."""
    from srscale.sampling import texts_of

    on_result = None if on_batch is None else (lambda i, cs: bool(on_batch([i], [cs[0].text])))
    return texts_of(HFSampler(model, tokenizer, batch_size).generate(
        texts, params, seed=seed, desc=desc, on_result=on_result, max_input_tokens=max_input_tokens))


def model_chat_fn(model, tokenizer, *, batch_size: int = 16, temperature: float = 0.0, top_p: float = 1.0,
                  seed: int = 0):
    """:func:`chat_fn` over an in-memory model."""
    return chat_fn(HFSampler(model, tokenizer, batch_size), temperature=temperature, top_p=top_p, seed=seed)
