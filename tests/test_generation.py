"""The HF backend's own promises, beyond the sampler contract (``tests/test_sampling.py``).

- Sampling semantics: the top-p rule keeps exactly the tokens transformers' ``TopPLogitsWarper`` keeps,
  and inverse-CDF draws from a row's uniforms follow the renormalised distribution.
- Greedy decoding equals ``model.generate(do_sample=False)`` token for token, whatever the batch width
  and refill setting, on the tiny random Llama, through a LoRA adapter, on tiny random models of the
  ladder's other architectures (Qwen2, Phi, GPT-Neo, Llama-3) and on a sliding-window cache (Mistral).
- No decode slot is spent on a finished row; the left cut feeds exactly the last tokens.
"""

from __future__ import annotations

import pytest
import torch

import sampler_models
from srscale.generation import HFSampler, generate_texts, generation_threads, left_cut
from srscale.sampling import SamplingParams, stop_token_ids
from srscale.token_sampling import next_tokens, row_uniforms, top_p_keep


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = sampler_models.build_random_llama(tmp_path_factory.mktemp("llama"))
    tok = AutoTokenizer.from_pretrained(d)
    return AutoModelForCausalLM.from_pretrained(d).eval(), tok


def reference_greedy(model, tok, text: str, max_new_tokens: int, max_input_tokens: int | None = None) -> list[int]:
    """``model.generate``'s greedy tokens for one unpadded text, cut after the first stop token."""
    stops = stop_token_ids(tok)
    ids = left_cut(tok(text, add_special_tokens=False)["input_ids"], max_input_tokens)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                             pad_token_id=tok.pad_token_id)
    new = out[0, len(ids):].tolist()
    end = next((k for k, t in enumerate(new) if t in stops), None)
    return new if end is None else new[:end + 1]


def expected(tok, tokens: list[int]) -> tuple[str, str, int]:
    stopped = tokens[-1] in stop_token_ids(tok)
    text = tok.decode(tokens[:-1] if stopped else tokens, skip_special_tokens=True).strip()
    return text, "stop" if stopped else "length", len(tokens)


# ------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_keeps_what_transformers_keeps(top_p: float) -> None:
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(0)
    scores = torch.randn(16, 200) * 3
    order, _, keep = top_p_keep(scores, top_p)
    mine = torch.zeros_like(keep).scatter(1, order, keep)
    theirs = TopPLogitsWarper(top_p)(None, scores.clone()) > -float("inf")
    assert torch.equal(mine, theirs)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9), (1.3, 0.5)])
def test_draws_follow_the_filtered_distribution(temperature: float, top_p: float) -> None:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(1, 12) * 2
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    probs = scores.softmax(-1)[0]
    m = 20000  # uniforms on an even grid: each token is picked a share of times within 1/m of its probability
    u = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    picked = next_tokens(logits.expand(m, -1), temperature, top_p, u)
    counts = torch.bincount(picked, minlength=12).double()
    assert torch.allclose(counts / m, probs.double(), atol=2 / m)


def test_greedy_is_the_argmax_and_a_row_does_not_depend_on_the_others() -> None:
    torch.manual_seed(2)
    logits = torch.randn(6, 50)
    assert torch.equal(next_tokens(logits, 0.0, 1.0, None), logits.argmax(-1))
    u = torch.rand(6, dtype=torch.float64)
    together = next_tokens(logits, 0.8, 0.9, u)
    alone = torch.cat([next_tokens(logits[r:r + 1], 0.8, 0.9, u[r:r + 1]) for r in range(6)])
    assert torch.equal(together, alone)
    assert torch.equal(row_uniforms(5, 4), row_uniforms(5, 4)) and not torch.equal(row_uniforms(5, 4), row_uniforms(6, 4))


# -------------------------------------------------------------------------------- greedy decoding
@pytest.mark.parametrize(("batch_size", "refill"), [(1, None), (3, 1), (4, None), (16, "auto")])
def test_greedy_equals_generate(llama, batch_size, refill) -> None:
    model, tok = llama
    texts = sampler_models.texts(tok, n=12)
    sampler = HFSampler(model, tok, batch_size, refill=refill)
    results = sampler.generate(texts, SamplingParams(24, 0.0), seed=0)
    got = [(c.text, c.finish_reason, c.new_tokens) for r in results for c in r]
    assert got == [expected(tok, reference_greedy(model, tok, t, 24)) for t in texts]
    # Every slot of every forward produced a kept token: finished rows left at once.
    assert sampler.last_stats.slots == sum(c.new_tokens for r in results for c in r)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_greedy_equals_generate_when_prompts_share_a_prefix(llama, batch_size) -> None:
    from srscale.hf_decode import MIN_SHARED_PREFIX

    model, tok = llama
    rubric = " ".join(sampler_models.WORDS[:24])  # a judge-rubric-like head every prompt starts with
    texts = [t.replace("<|user|>\n", f"<|user|>\n{rubric} ", 1) for t in sampler_models.texts(tok, n=10)]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    sampler = HFSampler(model, tok, batch_size)
    results = sampler.generate(texts, SamplingParams(20, 0.0), seed=0)
    got = [(c.text, c.finish_reason, c.new_tokens) for r in results for c in r]
    assert got == [expected(tok, reference_greedy(model, tok, t, 20)) for t in texts]
    fed = sampler.last_stats.prompt_tokens
    assert fed == sum(lengths) if batch_size == 1 else fed <= sum(lengths) - MIN_SHARED_PREFIX * (len(texts) - 1)


def test_shared_prefix_length() -> None:
    from srscale.hf_decode import shared_prefix_length

    assert shared_prefix_length([(1, 2, 3, 4), (1, 2, 3, 5), (1, 2, 9)]) == 2
    assert shared_prefix_length([(1, 2, 3), (1, 2, 3, 4)]) == 2  # the shorter keeps one token of its own
    assert shared_prefix_length([(7, 8)]) == 1 and shared_prefix_length([(1,), (2,)]) == 0
    assert shared_prefix_length([]) == 0


def test_greedy_with_the_left_cut_equals_generate_on_the_last_tokens(llama) -> None:
    model, tok = llama
    texts = sampler_models.texts(tok, n=8)
    cut = 12
    results = HFSampler(model, tok, 4).generate(texts, SamplingParams(16, 0.0), seed=0, max_input_tokens=cut)
    got = [(c.text, c.finish_reason, c.new_tokens) for r in results for c in r]
    assert got == [expected(tok, reference_greedy(model, tok, t, 16, cut)) for t in texts]


def test_greedy_through_a_lora_adapter_equals_generate(llama) -> None:
    from peft import LoraConfig, get_peft_model

    model, tok = llama
    torch.manual_seed(3)
    fresh = type(model).from_pretrained(model.name_or_path)  # get_peft_model changes the model it wraps
    peft_model = get_peft_model(fresh, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False)).eval()
    texts = sampler_models.texts(tok, n=6)
    results = HFSampler(peft_model, tok, 3).generate(texts, SamplingParams(16, 0.0), seed=0)
    got = [(c.text, c.finish_reason, c.new_tokens) for r in results for c in r]
    assert got == [expected(tok, reference_greedy(peft_model, tok, t, 16)) for t in texts]
    base = [(c.text, c.finish_reason, c.new_tokens) for r in HFSampler(model, tok, 3).generate(
        texts, SamplingParams(16, 0.0), seed=0) for c in r]
    assert got != base, "the adapter should change the completions"


LADDER = ["Qwen/Qwen2.5-0.5B", "microsoft/phi-1", "roneneldan/TinyStories-1M", "meta-llama/Llama-3.1-8B"]


@pytest.mark.slow
@pytest.mark.parametrize("hub_id", LADDER)
def test_greedy_equals_generate_on_the_ladder_architectures(hub_id: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from test_ladder import ARCH, family_tokenizer, tiny_dims

    arch = ARCH[hub_id]
    tok = family_tokenizer(arch.tokenizer)
    torch.manual_seed(0)
    config = AutoConfig.for_model(arch.model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                  initializer_range=sampler_models.INIT_STD, **tiny_dims(arch))
    model = AutoModelForCausalLM.from_config(config).eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with torch.no_grad():
        model.get_output_embeddings().weight[tok.eos_token_id] *= 3
    texts = [" ".join(sampler_models.WORDS[(7 * i + k) % len(sampler_models.WORDS)] for k in range(2 + 3 * i))
             for i in range(8)]
    for batch_size in (3, 8):
        results = HFSampler(model, tok, batch_size, refill=1).generate(texts, SamplingParams(20, 0.0), seed=0)
        got = [(c.text, c.finish_reason, c.new_tokens) for r in results for c in r]
        assert got == [expected(tok, reference_greedy(model, tok, t, 20)) for t in texts], batch_size


# ------------------------------------------------------------------------------------ the rest
def test_the_model_goes_back_to_training_mode(llama) -> None:
    model, tok = llama
    model.train()
    try:
        HFSampler(model, tok, 2).generate(sampler_models.texts(tok, n=2), SamplingParams(4, 0.0), seed=0)
        assert model.training
    finally:
        model.eval()


def test_generate_texts_calls_on_batch_per_text_in_order_and_stops(llama) -> None:
    model, tok = llama
    texts = sampler_models.texts(tok, n=6)
    seen = []
    out = generate_texts(model, tok, texts, SamplingParams(8, 0.7, 0.9), batch_size=2, seed=1,
                         on_batch=lambda idx, outs: seen.extend(idx) or len(seen) == 3)
    assert seen == [0, 1, 2]
    assert all(isinstance(t, str) for t in out[:3]) and out[3:] == [None, None, None]


def test_empty_text_is_refused(llama) -> None:
    model, tok = llama
    with pytest.raises(ValueError, match="no tokens"):
        HFSampler(model, tok, 2).generate(["", "x"], SamplingParams(4, 0.0), seed=0)


def test_thread_count() -> None:
    assert generation_threads(None, 2) == 2
    assert generation_threads(None, 0) == 1
    assert generation_threads(3, 2) == 3


# ----------------------------------------------------------------------------- cache bookkeeping
def _batch(rows: int, columns: int, real: list[int], fill: float):
    """A one-layer batch: row r's last ``real[r]`` columns are real, with cache values ``fill + r``."""
    from transformers import DynamicCache

    from srscale.hf_decode import _Batch, _Row

    keys = torch.zeros(rows, 1, columns, 2)
    mask = torch.zeros(rows, columns, dtype=torch.long)
    for r, n in enumerate(real):
        keys[r, :, columns - n:] = fill + r
        mask[r, columns - n:] = 1
    cache = DynamicCache(ddp_cache_data=[(keys, keys.clone())])
    return _Batch(cache, mask, torch.arange(rows), torch.tensor(real), None, [_Row(r, 0) for r in range(rows)])


def test_join_right_aligns_both_batches_and_select_cuts_unused_columns() -> None:
    from srscale.hf_decode import join, joinable, select

    a, b = _batch(2, 5, [5, 3], 1.0), _batch(1, 3, [2], 10.0)
    assert joinable(a.cache)
    j = join(a, b)
    keys = j.cache.layers[0].keys
    assert keys.shape == (3, 1, 5, 2) and j.mask.tolist() == [[1] * 5, [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]
    assert keys[2, 0, :, 0].tolist() == [0, 0, 0, 10, 10] and keys[1, 0, :, 0].tolist() == [0, 0, 2, 2, 2]
    assert j.pos.tolist() == [5, 3, 2] and [r.index for r in j.rows] == [0, 1, 0]
    # Dropping the full-length row leaves two leading columns no row uses: they are cut.
    s = select(j, [1, 2], trim=True)
    assert s.mask.tolist() == [[1, 1, 1], [0, 1, 1]] and s.cache.layers[0].keys[:, 0, :, 0].tolist() == [
        [2, 2, 2], [0, 10, 10]]
    assert s.pos.tolist() == [3, 2]
    kept = select(_batch(2, 5, [5, 3], 1.0), [1], trim=False)
    assert kept.mask.shape == (1, 5) and kept.cache.layers[0].keys.shape == (1, 1, 5, 2)


def test_a_sliding_window_cache_decodes_in_static_groups_and_equals_generate(llama) -> None:
    """Mistral with a window shorter than the texts: its cache layers keep only the window, so rows
    are neither joined nor cut (static groups), and greedy still equals ``generate``."""
    from transformers import MistralConfig, MistralForCausalLM

    from srscale.hf_decode import Decoder

    _, tok = llama
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
                           max_position_embeddings=512, initializer_range=sampler_models.INIT_STD,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight *= sampler_models.LOGIT_SCALE
        model.lm_head.weight[tok.eos_token_id] *= sampler_models.EOS_BOOST
    assert not Decoder(model).joinable
    texts = sampler_models.texts(tok, n=8)
    for batch_size in (1, 3):
        sampler = HFSampler(model, tok, batch_size)
        results = sampler.generate(texts, SamplingParams(16, 0.0), seed=0)
        got = [(c.text, c.finish_reason, c.new_tokens) for r in results for c in r]
        assert got == [expected(tok, reference_greedy(model, tok, t, 16)) for t in texts], batch_size
