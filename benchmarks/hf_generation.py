"""The HF generation backend on the default run's workloads: speed and decode slots spent on padding.

Workloads (the default config's numbers, on the default tiny model, or on a stage model with --model):

- ``candidates``: ``self_reward.prompts_per_iteration`` seed-pool prompts x N = ``self_reward.candidates``
  at the candidates' temperature / top-p / ``max_new_tokens``;
- ``judging``: K = ``judge.samples`` judgments of the judge prompt (``judge=short``) filled with the
  suite's held-out responses, ``judge.max_new_tokens``;
- ``answers``: greedy answers to held-out prompts (the task-accuracy evaluation);
- ``rm_eval``: greedy judgments of held-out responses (the reward-model evaluation, which judges
  every ``eft_eval`` response once per stage: the largest generation workload of the default run).

Methods:

- ``old``: srscale's HFSampler before this work (commit 722382b: one ``generate`` per static batch
  of rows sorted by length, seeded per batch);
- ``new``: today's HFSampler (own decode loop, finished rows leave, freed slots refilled);
- ``generate``: raw batched ``model.generate``, batches of rows in input order;
- ``per_prompt``: ``model.generate`` per text (``num_return_sequences=n``), as peer code loops;
- ``cb`` (with --cb): transformers' continuous batching, ``generate_batch`` with paged attention.

Slot waste = share of decode slots (row x step) spent on rows that had finished or were padding:
1 - generated tokens / slots, where a static batch of r rows running s steps has r*s slots. Methods
sample different tokens (their random streams differ), so tokens/s is the speed to compare; greedy
answers are the same tokens for every method.

    PYTHONPATH=src python benchmarks/hf_generation.py [--repeats 3] [--threads 1] [--model DIR] [--cb]

Methods run interleaved (each repeat runs every workload x method once) so that the machine's load
hits them alike; medians and ratios to ``old`` are printed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from default_job import base_model_path, default_config, default_data, load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "722382b"


@dataclass
class Workload:
    name: str
    texts: list[str]
    max_new_tokens: int
    temperature: float
    top_p: float
    n: int
    max_input_tokens: int | None


@dataclass
class Run:
    seconds: float
    tokens: int  # generated tokens kept (up to and including the stop token)
    slots: int  # rows x decode steps (prefill's first token included)

    @property
    def waste(self) -> float:
        return 1 - self.tokens / self.slots if self.slots else 0.0


def workloads(cfg, tok, data) -> list[Workload]:
    from srscale.judging import build_judge_prompt
    from srscale.sampling import render_chat, user_turn

    sr, jc = cfg.self_reward, cfg.judge
    chat = [render_chat(tok, user_turn(r["prompt"])) for r in data.seed_prompts[: sr.prompts_per_iteration]]
    items = [(r["prompt"], resp) for r in data.eft_eval for resp in r["responses"]][: sr.prompts_per_iteration]
    judge = [render_chat(tok, user_turn(build_judge_prompt(jc.template, p, r))) for p, r in items]
    answers = [render_chat(tok, user_turn(r["prompt"])) for r in data.heldout[: 2 * sr.prompts_per_iteration]]
    held = [(r["prompt"], resp) for r in data.eft_eval for resp in r["responses"]][: 3 * sr.prompts_per_iteration]
    rm_eval = [render_chat(tok, user_turn(build_judge_prompt(jc.template, p, r))) for p, r in held]
    return [
        Workload("candidates", chat, sr.max_new_tokens, sr.temperature, sr.top_p, sr.candidates, cfg.model.max_length),
        Workload("judging", judge, jc.max_new_tokens, jc.temperature, jc.top_p, jc.samples, cfg.model.max_length),
        Workload("answers", answers, sr.max_new_tokens, 0.0, 1.0, 1, cfg.model.max_length),
        Workload("rm_eval", rm_eval, jc.max_new_tokens, 0.0, 1.0, 1, cfg.model.max_length),
    ]


def old_sampler_class():
    """HFSampler as it was at ``OLD_COMMIT`` (loaded from git, beside today's sampling module)."""
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:src/srscale/generation.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_generation.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_generation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HFSampler


def _kept_length(ids: list[int], stops: set[int]) -> int:
    return next((k + 1 for k, t in enumerate(ids) if t in stops), len(ids))


def _generate_kwargs(w: Workload, tok, stops: list[int]) -> dict:
    kwargs = {"max_new_tokens": w.max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": stops}
    if w.temperature == 0:
        return {**kwargs, "do_sample": False}
    return {**kwargs, "do_sample": True, "temperature": w.temperature, "top_p": w.top_p, "top_k": 0}


def run_sampler(sampler, w: Workload, old_batching: int | None = None) -> Run:
    """A sampler's call; slots from its own stats, or (``old_batching`` = its batch size) from the old
    sampler's static batches, rebuilt as it formed them (rows sorted by input length)."""
    from srscale.sampling import SamplingParams

    params = SamplingParams(w.max_new_tokens, w.temperature, w.top_p, w.n)
    start = time.perf_counter()
    results = sampler.generate(w.texts, params, seed=0, max_input_tokens=w.max_input_tokens)
    seconds = time.perf_counter() - start
    tokens = sum(c.new_tokens for r in results for c in r)
    if old_batching is None:
        return Run(seconds, tokens, sampler.last_stats.slots)
    lengths = [len(x) for x in sampler.tokenizer(w.texts, add_special_tokens=False)["input_ids"]]
    rows = sorted(((i, j) for i in range(len(w.texts)) for j in range(w.n)), key=lambda ij: lengths[ij[0]])
    slots = 0
    for s in range(0, len(rows), old_batching):
        batch = [results[i][j].new_tokens for i, j in rows[s:s + old_batching]]
        slots += len(batch) * max(batch)
    return Run(seconds, tokens, slots)


@torch.no_grad()
def run_generate(model, tok, w: Workload, batch_size: int) -> Run:
    from srscale.generation import encode_batch
    from srscale.sampling import stop_token_ids

    stops = stop_token_ids(tok)
    kwargs = _generate_kwargs(w, tok, stops)
    rows = [t for t in w.texts for _ in range(w.n)]
    tokens = slots = 0
    start = time.perf_counter()
    for s in range(0, len(rows), batch_size):
        enc = encode_batch(tok, rows[s:s + batch_size], w.max_input_tokens)
        out = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:].tolist()
        tokens += sum(_kept_length(ids, set(stops)) for ids in out)
        slots += len(out) * max(_kept_length(ids, set(stops)) for ids in out)
    return Run(time.perf_counter() - start, tokens, slots)


@torch.no_grad()
def run_per_prompt(model, tok, w: Workload) -> Run:
    from srscale.generation import encode_batch
    from srscale.sampling import stop_token_ids

    stops = stop_token_ids(tok)
    kwargs = _generate_kwargs(w, tok, stops)
    if w.n > 1:
        kwargs["num_return_sequences"] = w.n
    tokens = slots = 0
    start = time.perf_counter()
    for text in w.texts:
        enc = encode_batch(tok, [text], w.max_input_tokens)
        out = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:].tolist()
        lengths = [_kept_length(ids, set(stops)) for ids in out]
        tokens += sum(lengths)
        slots += len(out) * max(lengths)
    return Run(time.perf_counter() - start, tokens, slots)


@torch.no_grad()
def run_cb(model, tok, w: Workload, batch_size: int) -> Run:
    """transformers' continuous batching (paged attention; one RNG for all requests, no per-request seed)."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    from srscale.generation import left_cut
    from srscale.sampling import stop_token_ids

    stops = stop_token_ids(tok)
    kw = _generate_kwargs(w, tok, stops)
    gc = GenerationConfig(num_return_sequences=w.n, **kw)
    ids = [left_cut(x, w.max_input_tokens) for x in tok(w.texts, add_special_tokens=False)["input_ids"]]
    longest = max(len(x) for x in ids) + w.max_new_tokens
    cb = ContinuousBatchingConfig(page_size=64, num_blocks=batch_size * (longest // 64 + 2),
                                  max_batch_tokens=max(1024, longest), max_requests_per_batch=batch_size)
    model.set_attn_implementation("paged|sdpa")
    try:
        start = time.perf_counter()
        out = model.generate_batch(ids, generation_config=gc, continuous_batching_config=cb, warmup=False)
        seconds = time.perf_counter() - start
    finally:
        model.set_attn_implementation("sdpa")
    tokens = sum(_kept_length(list(o.generated_tokens), set(stops)) for o in out.values())
    return Run(seconds, tokens, tokens)  # paged: no slot is spent on a finished row


def new_sampler(model, tok, batch_size: int, refill, threads: int | None = None):
    """A method running today's HFSampler with these settings (torch threads set for the call only)."""
    from srscale.generation import HFSampler

    def run(w: Workload) -> Run:
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            return run_sampler(HFSampler(model, tok, batch_size, refill=refill), w)
        finally:
            torch.set_num_threads(before)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved stage model (e.g. outputs/default/sft/model); "
                                                  "default: the base tiny model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=None, help="default: self_reward.batch_size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--methods", default="old,new,generate,per_prompt")
    ap.add_argument("--cb", action="store_true", help="also transformers' continuous batching")
    ap.add_argument("--workloads", default="candidates,judging,answers,rm_eval")
    ap.add_argument("--variants", default="", help="extra new-sampler settings, e.g. "
                                                   "'static:bs=32:refill=none,wide:bs=128' ")
    ap.add_argument("--compare-threads", action="store_true", help="also the new sampler at 1 and 2 threads")
    args = ap.parse_args()

    from srscale.generation import HFSampler

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = default_config()
    base_model_path(cfg)
    model, tok = load(cfg, args.model)
    model.eval()
    data = default_data(cfg)
    bs = args.batch_size or cfg.self_reward.batch_size
    chosen = [w for w in workloads(cfg, tok, data) if w.name in args.workloads.split(",")]
    Old = old_sampler_class()
    methods: dict[str, callable] = {}
    for m in args.methods.split(","):
        methods[m] = {
            "old": lambda w: run_sampler(Old(model, tok, bs), w, old_batching=bs),
            "new": lambda w: run_sampler(HFSampler(model, tok, bs), w),
            "generate": lambda w: run_generate(model, tok, w, bs),
            "per_prompt": lambda w: run_per_prompt(model, tok, w),
        }[m]
    if args.cb:
        methods["cb"] = lambda w: run_cb(model, tok, w, bs)
    for spec in filter(None, args.variants.split(",")):
        name, *opts = spec.split(":")
        o = dict(x.split("=") for x in opts)
        vbs = int(o.get("bs", bs))
        refill = o.get("refill", "auto")
        refill = None if refill == "none" else (refill if refill == "auto" else int(refill))
        methods[name] = new_sampler(model, tok, vbs, refill)
    if args.compare_threads:
        methods["new@1thread"] = new_sampler(model, tok, bs, "auto", threads=1)
        methods["new@2threads"] = new_sampler(model, tok, bs, "auto", threads=2)

    print(f"model {args.model or base_model_path(cfg)}; batch size {bs}; torch threads {torch.get_num_threads()}; "
          f"{args.repeats} interleaved repeats")
    for w in chosen:
        print(f"  {w.name}: {len(w.texts)} texts x n={w.n}, max_new_tokens {w.max_new_tokens}, "
              f"T {w.temperature}, top-p {w.top_p}")
    runs: dict[tuple[str, str], list[Run]] = {}
    for w in chosen:  # warm-up: first calls pay one-off costs
        for m in methods.values():
            m(w)
    for rep in range(args.repeats):
        for w in chosen:
            for name, m in methods.items():
                runs.setdefault((w.name, name), []).append(m(w))
        print(f"  repeat {rep + 1} done", flush=True)

    print(f"\n{'workload':11s} {'method':14s} {'median s':>9s} {'tokens':>7s} {'tok/s':>8s} {'slot waste':>11s} "
          f"{'tok/s vs old':>13s} {'time vs old':>12s}")
    for w in chosen:
        base = runs.get((w.name, "old"))
        base_tps = statistics.median(r.tokens / r.seconds for r in base) if base else None
        base_s = statistics.median(r.seconds for r in base) if base else None
        for name in methods:
            rs = runs[(w.name, name)]
            sec = statistics.median(r.seconds for r in rs)
            tps = statistics.median(r.tokens / r.seconds for r in rs)
            tokens = statistics.median(r.tokens for r in rs)
            waste = statistics.median(r.waste for r in rs)
            rel = f"{tps / base_tps:12.2f}x" if base_tps else " " * 13
            rel_s = f"{base_s / sec:11.2f}x" if base_s else " " * 12
            print(f"{w.name:11s} {name:14s} {sec:9.2f} {tokens:7.0f} {tps:8.0f} {waste:10.0%} {rel} {rel_s}")


if __name__ == "__main__":
    main()
