"""Batched sampling from a causal LM: left padding, one ``generate`` call per batch, progress bar.

Only the generated tokens are decoded and returned; the prompt is never part of the output (so a
judge prompt's own "Score: <total points>" can never be parsed as a judgment). Sampling is seeded per
call, so the same model, inputs and seed give the same texts on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.7
    top_p: float = 0.9

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def render_chat(tokenizer, conversation: list[dict]) -> str:
    """The model's chat template applied with a generation prompt."""
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def user_turn(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


# End-of-turn markers of common chat templates; generation stops on whichever the tokenizer has.
END_OF_TURN_TOKENS = ("<|end|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>")


def stop_token_ids(tokenizer) -> list[int]:
    """The eos id plus any end-of-turn token the vocabulary holds (ChatML and Llama-3 end turns
    with a token other than eos)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    ids += [vocab[t] for t in END_OF_TURN_TOKENS if t in vocab and vocab[t] not in ids]
    return ids


def encode_batch(tokenizer, texts: Sequence[str], max_input_tokens: int | None = None) -> dict:
    """Tokenize templated texts for generation: padded and, past ``max_input_tokens``, cut on the
    left, so every input still ends with its generation prompt (a right cut would drop the
    assistant turn and the model would go on writing the user's text)."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False,
                     truncation=max_input_tokens is not None, max_length=max_input_tokens)


@torch.no_grad()
def generate_texts(model, tokenizer, texts: Sequence[str], params: SamplingParams, *, batch_size: int = 32,
                   seed: int = 0, desc: str = "generate", on_batch: Callable[[list[int], list[str]], bool] | None = None,
                   max_input_tokens: int | None = None) -> list[str]:
    """Continue each raw text (already templated). Returns decoded completions, in input order.

    Inputs are processed sorted by length so batches pad little; results come back in input order.
    ``on_batch(indices, completions)`` is called after every batch in processing order; returning
    True stops early (the gate uses this so a disqualified model wastes no compute), and the texts
    never generated come back as None.
    """
    if not texts:
        return []
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: dict[int, str] = {}
    was_training = model.training
    model.eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    bar = tqdm(total=len(texts), desc=desc, leave=False)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = {k: v.to(device) for k, v in encode_batch(tokenizer, [texts[i] for i in idx],
                                                            max_input_tokens).items()}
            # Seed torch's global RNG from our own generator: per-batch determinism independent of
            # whatever ran before.
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            kwargs = {"max_new_tokens": params.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                      "eos_token_id": stop_token_ids(tokenizer)}
            if params.greedy:
                kwargs["do_sample"] = False
            else:
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
            out = model.generate(**enc, **kwargs)
            new_tokens = out[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new_tokens, strict=True):
                outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            bar.update(len(idx))
            if on_batch is not None and on_batch(idx, [outputs[i] for i in idx]):
                break
    finally:
        bar.close()
        if was_training:
            model.train()
    return [outputs.get(i) for i in range(len(texts))]


def chat_fn(model, tokenizer, *, batch_size: int = 16, temperature: float = 0.0, top_p: float = 1.0,
            seed: int = 0) -> Callable[[list[list[dict]], int], list[str]]:
    """A ``chat(conversations, max_new_tokens) -> replies`` callable over this model (for evaluations)."""

    def chat(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        texts = [render_chat(tokenizer, c) for c in conversations]
        return generate_texts(model, tokenizer, texts, SamplingParams(max_new_tokens, temperature, top_p),
                              batch_size=batch_size, seed=seed, desc="answer")

    return chat
