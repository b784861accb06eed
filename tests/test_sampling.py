"""The sampler contract (``srscale.sampling``), held against every backend.

Each test takes ``make_sampler``: a factory ``make_sampler(batch_size) -> Sampler`` over one tiny random
Llama saved in a directory (``tests/sampler_models.py``). A backend joins by adding a
``pytest.param(factory, id=name, marks=...)`` to ``BACKENDS``: ``factory(model_dir, batch_size)``
returns a sampler over the weights saved in ``model_dir`` (mark it ``skipif`` where its engine is not
installed). The tests use only what the contract promises: texts, token counts, finish reasons and the
tokenizer, never a backend's internals.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

import sampler_models
from srscale.sampling import Completion, Sampler, SamplingParams


@functools.cache
def _hf_model(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), tok


def hf_backend(model_dir: Path, batch_size: int) -> Sampler:
    from srscale.generation import HFSampler

    model, tok = _hf_model(str(model_dir))
    return HFSampler(model, tok, batch_size)


_VLLM_ENGINES: dict[str, object] = {}  # model directory -> engine, closed when the module ends


def vllm_backend(model_dir: Path, batch_size: int) -> Sampler:
    from srscale.config import ModelConfig
    from srscale.models import load_tokenizer
    from srscale.vllm_sampler import VLLMEngine, VLLMSampler

    engine = _VLLM_ENGINES.get(str(model_dir))
    if engine is None:
        tok = load_tokenizer(ModelConfig(name="random", source="hub", hub_id=str(model_dir)), str(model_dir))
        # Eager (no torch.compile at start-up) and one thread: the tests check outputs, not speed.
        engine = VLLMEngine(model_dir, tok, python=sampler_models.VLLM_PYTHON, dtype="float32", max_model_len=256,
                            enforce_eager=True, threads=1, cpu_kv_cache_gib=1, log_path=model_dir / "vllm_worker.log")
        _VLLM_ENGINES[str(model_dir)] = engine
    return VLLMSampler(engine, None, chunk_sequences=batch_size)


BACKENDS = [pytest.param(hf_backend, id="hf"),
            pytest.param(vllm_backend, id="vllm", marks=[pytest.mark.slow, pytest.mark.skipif(
                not sampler_models.VLLM_PYTHON.is_file(), reason=sampler_models.NO_VLLM)])]

SAMPLE = SamplingParams(max_new_tokens=24, temperature=0.7, top_p=0.9, n=3)
GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Iterator[Path]:
    yield sampler_models.build_random_llama(tmp_path_factory.mktemp("sampler_model"))
    while _VLLM_ENGINES:
        _VLLM_ENGINES.popitem()[1].close()


@pytest.fixture(params=BACKENDS)
def make_sampler(request, model_dir):
    return functools.partial(request.param, model_dir)


@pytest.fixture
def texts(make_sampler) -> list[str]:
    return sampler_models.texts(make_sampler(1).tokenizer)


def as_tuples(results: list[list[Completion] | None]) -> list:
    return [None if r is None else [(c.text, c.finish_reason, c.new_tokens) for c in r] for r in results]


def test_is_a_sampler(make_sampler) -> None:
    s = make_sampler(4)
    assert isinstance(s, Sampler) and s.backend and s.version
    assert s.generate([], GREEDY, seed=0) == []


def test_one_entry_of_n_completions_per_text_in_input_order(make_sampler, texts) -> None:
    s = make_sampler(4)
    results = s.generate(texts, SAMPLE, seed=3)
    assert len(results) == len(texts) and all(len(r) == SAMPLE.n for r in results)
    # Entry i is text i's: greedy completions of the batch equal each text's own, generated alone.
    greedy = s.generate(texts, GREEDY, seed=0)
    alone = [s.generate([t], GREEDY, seed=0)[0] for t in texts]
    assert as_tuples(greedy) == as_tuples(alone)


def test_sampling_does_not_depend_on_batch_size(make_sampler, texts) -> None:
    reference = as_tuples(make_sampler(1).generate(texts, SAMPLE, seed=7))
    for batch_size in (3, 16):
        assert as_tuples(make_sampler(batch_size).generate(texts, SAMPLE, seed=7)) == reference, batch_size


def test_each_completion_has_its_own_stream_of_seed_text_and_sample(make_sampler, texts) -> None:
    s = make_sampler(4)
    first = as_tuples(s.generate(texts, SAMPLE, seed=11))
    assert as_tuples(s.generate(texts, SAMPLE, seed=11)) == first  # same call, same completions
    # Text i's completions depend on (seed, i, j), not on the texts after it.
    assert as_tuples(s.generate(texts[:4], SAMPLE, seed=11)) == first[:4]
    assert as_tuples(s.generate(texts, SAMPLE, seed=12)) != first
    # The n samples of a text are different draws.
    assert any(len({c[0] for c in entry}) > 1 for entry in first)


def test_greedy_samples_are_identical(make_sampler, texts) -> None:
    results = make_sampler(4).generate(texts, SamplingParams(24, 0.0, n=2), seed=0)
    assert all(a.text == b.text and a.new_tokens == b.new_tokens for a, b in results)


@pytest.mark.parametrize("batch_size", [2, 5])
def test_on_result_sees_texts_in_input_order_and_a_stop_returns_none_for_the_rest(make_sampler, texts,
                                                                                   batch_size) -> None:
    s = make_sampler(batch_size)
    full = s.generate(texts, SAMPLE, seed=5)
    seen: list[int] = []

    def on_result(i: int, completions: list[Completion]) -> bool:
        assert len(completions) == SAMPLE.n
        seen.append(i)
        return i == 4

    results = s.generate(texts, SAMPLE, seed=5, on_result=on_result)
    assert seen == [0, 1, 2, 3, 4]
    assert all(r is not None for r in results[:5]) and all(r is None for r in results[5:])
    assert as_tuples(results[:5]) == as_tuples(full[:5])  # delivered texts are the same completions

    seen.clear()
    everything = s.generate(texts, SAMPLE, seed=5, on_result=lambda i, c: seen.append(i) or False)
    assert seen == list(range(len(texts))) and as_tuples(everything) == as_tuples(full)


def test_finish_reason_is_length_exactly_when_the_budget_ran_out(make_sampler, texts) -> None:
    s = make_sampler(4)
    budget = SAMPLE.max_new_tokens
    results = s.generate(texts, SAMPLE, seed=2)
    reasons = {c.finish_reason for r in results for c in r}
    assert reasons == {"stop", "length"}, "the test model should end some completions early and cut others"
    for r in results:
        for c in r:
            assert c.new_tokens == budget if c.finish_reason == "length" else 1 <= c.new_tokens <= budget
    # A completion whose end token is its k-th token ends with "stop" under a budget of exactly k, and is
    # cut ("length", k - 1 tokens, the same text) under k - 1.
    long = s.generate(texts, SamplingParams(40, 0.0), seed=0)
    i, c = next((i, r[0]) for i, r in enumerate(long) if r[0].finish_reason == "stop" and r[0].new_tokens > 2)
    k = c.new_tokens
    exact = s.generate([texts[i]], SamplingParams(k, 0.0), seed=0)[0][0]
    assert (exact.text, exact.finish_reason, exact.new_tokens) == (c.text, "stop", k)
    short = s.generate([texts[i]], SamplingParams(k - 1, 0.0), seed=0)[0][0]
    assert (short.text, short.finish_reason, short.new_tokens) == (c.text, "length", k - 1)


def test_token_counts_and_the_left_cut(make_sampler, texts) -> None:
    s = make_sampler(4)
    lengths = [len(s.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    results = s.generate(texts, SAMPLE, seed=0)
    for r, n in zip(results, lengths, strict=True):
        assert r[0].prompt_tokens == n and all(c.prompt_tokens in (0, n) for c in r)
        assert not any(c.input_truncated for c in r)
    cut = sorted(lengths)[len(lengths) // 2]
    results = s.generate(texts, SAMPLE, seed=0, max_input_tokens=cut)
    for r, n in zip(results, lengths, strict=True):
        assert r[0].prompt_tokens == min(n, cut) and all(c.prompt_tokens in (0, min(n, cut)) for c in r)
        assert all(c.input_truncated == (n > cut) for c in r)
    assert any(n > cut for n in lengths)
