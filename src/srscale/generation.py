"""The Hugging Face backend of the sampler seam (:mod:`srscale.sampling`): batched ``generate`` in process.

Left padding, one ``generate`` call per batch, a progress bar. Only the generated tokens are decoded
(so a judge prompt's own "Score: <total points>" can never be parsed as a judgment).

Batching: without ``on_result`` the texts are processed sorted by length, so batches pad little;
with it (the gate), they are processed in input order, one batch at a time, so that a stop request
lands within one batch of the text that triggered it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from srscale.sampling import (
    Completion,
    InOrderDelivery,
    OnResult,
    SamplingParams,
    render_chat,
    stop_token_ids,
    user_turn,
)

__all__ = ["HFSampler", "SamplingParams", "encode_batch", "render_chat", "stop_token_ids", "user_turn"]


def encode_batch(tokenizer, texts: Sequence[str], max_input_tokens: int | None = None) -> dict:
    """Tokenize templated texts for generation: padded and, past ``max_input_tokens``, cut on the
    left, so every input still ends with its generation prompt (a right cut would drop the
    assistant turn and the model would go on writing the user's text)."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False,
                     truncation=max_input_tokens is not None, max_length=max_input_tokens)


def _input_lengths(tokenizer, texts: Sequence[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


class HFSampler:
    """Sampler over an in-memory transformers model (and its tokenizer)."""

    backend = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 32):
        import transformers

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.version = transformers.__version__

    @torch.no_grad()
    def generate(self, texts: Sequence[str], params: SamplingParams, *, seed: int, desc: str = "generate",
                 on_result: OnResult | None = None,
                 max_input_tokens: int | None = None) -> list[list[Completion] | None]:
        if not texts:
            return []
        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        flat = [(i, j) for i in range(len(texts)) for j in range(params.n)]  # one row per completion
        if on_result is None:
            lengths = _input_lengths(tok, texts)
            flat.sort(key=lambda ij: lengths[ij[0]])
        delivery = InOrderDelivery(len(texts), on_result)
        done: dict[int, dict[int, Completion]] = {}
        stops = stop_token_ids(tok)
        was_training = model.training
        model.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        bar = tqdm(total=len(flat), desc=desc, leave=False)
        try:
            for start in range(0, len(flat), self.batch_size):
                rows = flat[start:start + self.batch_size]
                batch = [texts[i] for i, _ in rows]
                enc = encode_batch(tok, batch, max_input_tokens)
                full = _input_lengths(tok, batch) if max_input_tokens else None
                fed = enc["attention_mask"].sum(dim=1).tolist()
                enc = {k: v.to(device) for k, v in enc.items()}
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                kwargs = {"max_new_tokens": params.max_new_tokens, "pad_token_id": tok.pad_token_id,
                          "eos_token_id": stops}
                if params.greedy:
                    kwargs["do_sample"] = False
                else:
                    kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
                out = model.generate(**enc, **kwargs)
                new = out[:, enc["input_ids"].shape[1]:].tolist()
                for r, ((i, j), ids) in enumerate(zip(rows, new, strict=True)):
                    ended = next((k for k, t in enumerate(ids) if t in stops), None)
                    kept = ids if ended is None else ids[:ended + 1]
                    done.setdefault(i, {})[j] = Completion(
                        text=tok.decode(kept, skip_special_tokens=True).strip(),
                        finish_reason="length" if ended is None else "stop",
                        prompt_tokens=int(fed[r]), new_tokens=len(kept),
                        input_truncated=bool(full and full[r] > fed[r]))
                    if len(done[i]) == params.n:
                        delivery.add(i, [done[i][k] for k in range(params.n)])
                bar.update(len(rows))
                if delivery.stopped:
                    break
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
