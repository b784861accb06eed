"""The sampler seam: what every stage generates with, whatever engine is behind it.

Stages never touch a model object to generate. They hand a :class:`Sampler` templated texts and
:class:`SamplingParams` and get :class:`Completion` lists back, one list of ``params.n`` per text,
**in input order**. Two backends implement it: :class:`srscale.generation.HFSampler` (transformers,
in process; the default) and :class:`srscale.vllm_sampler.VLLMSampler` (vLLM in its own process).

Contract (both backends; ``tests/test_sampling.py`` holds every backend to it):

* ``generate(texts, params, seed=s)`` returns ``len(texts)`` entries; entry ``i`` is ``params.n``
  completions of ``texts[i]``. Only generated tokens are decoded, never the prompt.
* Seeds: the same sampler state, texts, params and seed give the same completions. Completion
  ``j`` of text ``i`` is drawn from its own stream derived from ``(seed, i, j)``, so it does not depend
  on how the backend batches (up to floating-point differences of padded batches).
* ``on_result(i, completions)`` is called for every text **in input order**, as soon as that text and
  every text before it are done. Returning True stops generation: the backend finishes at most the
  batch in flight, and every text whose completions were not delivered comes back as ``None``.
  The gate relies on this: it sees judgments in the order of the judged items, whatever the batching.
* Generation stops at the tokenizer's eos or any end-of-turn token it has
  (:func:`stop_token_ids`), or after ``params.max_new_tokens`` (``finish_reason="length"``).
* Inputs longer than ``max_input_tokens`` are cut on the left (the generation prompt survives);
  ``Completion.input_truncated`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature=0`` is greedy (then ``top_p`` is ignored)."""

    max_new_tokens: int
    temperature: float = 0.7
    top_p: float = 0.9
    n: int = 1  # completions per text (vLLM: one request with n samples, prefix shared)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.n < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling parameters: {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One generated continuation and what it cost."""

    text: str
    finish_reason: str  # "stop": an end token was generated | "length": cut at max_new_tokens
    # Input tokens the engine processed for this completion (after any left cut). A backend that
    # shares one prefill among a text's n samples counts it on the first of them only.
    prompt_tokens: int
    new_tokens: int  # tokens generated (the end token included)
    input_truncated: bool = False  # the input was cut on the left to fit max_input_tokens

    @property
    def truncated(self) -> bool:
        """The completion was cut off by the token budget before it ended."""
        return self.finish_reason == "length"


OnResult = Callable[[int, list[Completion]], bool]


@runtime_checkable
class Sampler(Protocol):
    """Completions for templated texts. See the module docstring for the contract."""

    backend: str  # "hf" | "vllm"
    version: str  # the engine's version (logged as a tag: samples of different engines differ)
    tokenizer: Any  # the model's HF tokenizer (chat template, token counts)

    def generate(self, texts: Sequence[str], params: SamplingParams, *, seed: int, desc: str = "generate",
                 on_result: OnResult | None = None,
                 max_input_tokens: int | None = None) -> list[list[Completion] | None]: ...


class Engine(Protocol):
    """A job's generation engine: serves samplers for the job's stage models, one at a time.

    ``sampler(source)`` returns a sampler over the stage model saved at ``source`` (an adapter or full
    weights directory; ``None`` is the base model), loading or switching weights as needed (vLLM
    serves a LoRA stage as an adapter of one long-lived engine). ``release()`` frees accelerator
    memory before a training stage (the next ``sampler`` call loads again); ``close()`` ends it.
    Start-up cost is paid once per job, not per stage.
    """

    backend: str

    def sampler(self, source: Any) -> Sampler: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


# --------------------------------------------------------------------------------- shared helpers
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


def item_seed(seed: int, index: int, sample: int = 0) -> int:
    """The seed of completion ``sample`` of text ``index`` in a call seeded ``seed`` (pure, 31 bits)."""
    x = (seed * 0x9E3779B1 + index * 0x85EBCA77 + sample * 0xC2B2AE3D + 0x27D4EB2F) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 33
    return x & 0x7FFFFFFF


class InOrderDelivery:
    """Releases results to ``on_result`` in input order as batches finish in any order.

    ``add(i, completions)`` records text ``i``; every text of the unbroken prefix that is now complete
    is delivered. ``stopped`` turns True once ``on_result`` asks to stop; later results are dropped, so
    the caller's output holds exactly the texts that were delivered (the rest are None).
    """

    def __init__(self, n: int, on_result: OnResult | None):
        self.results: list[list[Completion] | None] = [None] * n
        self._pending: dict[int, list[Completion]] = {}
        self._next = 0
        self._on_result = on_result
        self.stopped = False

    def add(self, index: int, completions: list[Completion]) -> None:
        if self.stopped:
            return
        self._pending[index] = completions
        while self._next in self._pending and not self.stopped:
            i = self._next
            self.results[i] = self._pending.pop(i)
            self._next += 1
            if self._on_result is not None and self._on_result(i, self.results[i]):
                self.stopped = True
        if self.stopped:
            self._pending.clear()

    @property
    def delivered(self) -> int:
        return self._next


def texts_of(results: Sequence[list[Completion] | None]) -> list[str | None]:
    """The first completion's text of each entry (None where not generated): for ``n=1`` calls."""
    return [r[0].text if r else None for r in results]


@dataclass
class TokenCount:
    """Tokens a stage fed and generated (cost accounting)."""

    prompt: int = 0
    new: int = 0
    sequences: int = 0
    truncated_outputs: int = 0
    truncated_inputs: int = 0

    def add(self, results: Sequence[list[Completion] | None]) -> TokenCount:
        for entry in results:
            for c in entry or []:
                self.prompt += c.prompt_tokens
                self.new += c.new_tokens
                self.sequences += 1
                self.truncated_outputs += c.truncated
                self.truncated_inputs += c.input_truncated
        return self


class CountingSampler:
    """A sampler that adds up the tokens of every call it passes on (cost accounting of evaluations)."""

    def __init__(self, inner: Sampler, tokens: TokenCount):
        self.inner, self.tokens = inner, tokens
        self.backend, self.version, self.tokenizer = inner.backend, inner.version, inner.tokenizer

    def generate(self, texts, params, **kwargs):
        results = self.inner.generate(texts, params, **kwargs)
        self.tokens.add(results)
        return results
