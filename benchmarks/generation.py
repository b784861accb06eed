"""Generation throughput, side by side: srscale's candidate and judging paths on each backend, raw
batched ``model.generate`` and a per-prompt loop, on ``tiny_1m`` (the default until 2026-12-04; vLLM's CPU
attention refuses the default ``tiny_300k``'s head size of 16).

    python benchmarks/generation.py                       # 3 repeats, interleaved; hf and vllm
    python benchmarks/generation.py --repeats 5 --threads 1 --backends hf
    python benchmarks/generation.py --model outputs/default/sft/model   # a trained stage model (M1)
    python benchmarks/generation.py --job outputs/default # time per stage of a finished job

Workloads (the default run's settings): *candidates*, seed-pool prompts x N=4 at T 0.7, top-p 0.9,
40 new tokens; *judging*, 128 filled ``judge=short`` prompts (suite prompts and responses: as many as
a default run judges per call, 32 prompts x N=4 candidates) x K=3 at
T 0.7, top-p 0.9, 96 new tokens, through an ``on_result`` callback as the gate uses it (never
stopping). Rows per workload:

* ``srscale hf`` / ``srscale vllm``: ``Sampler.generate(texts, SamplingParams(n=...))`` of each backend;
* ``raw generate``: HF ``model.generate`` on the same prompts and budgets, batches of 32 sequences
  (each prompt repeated n times), left-padded, one call per batch;
* ``per-prompt loop``: one ``generate`` per prompt and sample, as peer code does (on the first
  ``--loop-items`` prompts: its rate is what is compared).

Rates are generated tokens per second (end tokens included), so rows that sample different lengths
compare fairly. Every row runs once per repeat, in an order rotated each repeat, on that repeat's own
texts (fresh for every repeat, as each judging call of a job is: no prompt is served from vLLM's
prefix cache by an earlier repeat); min / median / max are over repeats and ratios are of medians. vLLM's start-up (worker process + engine) is printed
apart: a job pays it once. The CPU threads of both backends are the same (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


# ------------------------------------------------------------------------------ setup
def default_model(cache_dir: str) -> tuple[str, str]:
    """``tiny_1m`` and the default judge template, built or taken from the cache."""
    from omegaconf import OmegaConf

    from srscale.config import TinyArchConfig
    from srscale.tinymodel import ensure_tiny_model

    tiny = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny_1m.yaml"))["tiny"]
    template = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "judge" / "short.yaml"))["template"]
    return str(ensure_tiny_model("tiny", TinyArchConfig(**tiny), cache_dir, (template,))), template


def workloads(tok, template: str, prompts: int, judge_items: int, sets: int = 1) -> dict:
    """Per workload: ``sets`` disjoint lists of texts (one for the warm-up, one per repeat), the
    sampling parameters, and whether the call is gated.

    Every repeat gets texts no earlier call has seen, as every judging call of a job does: vLLM's
    prefix cache then shares only what a job's calls share (the chat template and the judge rubric),
    not whole prompts cached by the previous repeat."""
    from srscale.config import SuiteSizes
    from srscale.judging import build_judge_prompt
    from srscale.sampling import SamplingParams, render_chat, user_turn
    from srscale.suite.build import build_suite

    sizes = SuiteSizes(ift=1, eft=0, seed_pairs=judge_items * sets, eft_eval=0, heldout=0,
                       seed_prompts=prompts * sets, probe=0)
    suite = build_suite(sizes, seed=0, judge_template=template)
    cand = [render_chat(tok, user_turn(r["prompt"])) for r in suite.seed_prompts[:prompts * sets]]
    judge = [render_chat(tok, user_turn(build_judge_prompt(template, r["prompt"], r["chosen" if i % 2 else "rejected"])))
             for i, r in enumerate(suite.seed_pairs[:judge_items * sets])]
    if len(set(cand)) < len(cand) or len(set(judge)) < len(judge):
        raise SystemExit("the suite repeated a prompt: the repeats would not see fresh texts")
    return {"candidates": ([cand[i * prompts:(i + 1) * prompts] for i in range(sets)],
                           SamplingParams(40, 0.7, 0.9, n=4), False),
            "judging": ([judge[i * judge_items:(i + 1) * judge_items] for i in range(sets)],
                        SamplingParams(96, 0.7, 0.9, n=3), True)}


# ------------------------------------------------------------------------------ the rows
def run_sampler(sampler, texts, params, gated: bool, seed: int) -> int:
    on_result = (lambda i, cs: False) if gated else None
    out = sampler.generate(texts, params, seed=seed, on_result=on_result, max_input_tokens=512)
    return sum(c.new_tokens for r in out for c in r)


def _new_tokens(rows, stops: set) -> int:
    total = 0
    for ids in rows:
        ended = next((k for k, t in enumerate(ids) if t in stops), None)
        total += len(ids) if ended is None else ended + 1
    return total


def _gen_kwargs(tok, params, stops) -> dict:
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0,
            "max_new_tokens": params.max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": list(stops)}


def run_raw(model, tok, texts, params, seed: int, batch: int = 32) -> int:
    import torch

    from srscale.sampling import stop_token_ids

    stops = stop_token_ids(tok)
    rows = [t for t in texts for _ in range(params.n)]
    tok.padding_side = "left"
    torch.manual_seed(seed)
    total = 0
    with torch.no_grad():
        for s in range(0, len(rows), batch):
            enc = tok(rows[s:s + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, **_gen_kwargs(tok, params, stops))
            total += _new_tokens(out[:, enc["input_ids"].shape[1]:].tolist(), set(stops))
    return total


def run_loop(model, tok, texts, params, seed: int) -> int:
    import torch

    from srscale.sampling import stop_token_ids

    stops = stop_token_ids(tok)
    torch.manual_seed(seed)
    total = 0
    with torch.no_grad():
        for text in texts:
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            for _ in range(params.n):
                out = model.generate(**enc, **_gen_kwargs(tok, params, stops))
                total += _new_tokens(out[:, enc["input_ids"].shape[1]:].tolist(), set(stops))
    return total


# ------------------------------------------------------------------------------ reporting
def summarize(rates: list[float]) -> tuple[float, float, float]:
    return min(rates), statistics.median(rates), max(rates)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:5.1f}x" if a and b else "    -"


def table(results: dict[str, dict[str, list[tuple[float, float]]]]) -> str:
    """Per workload: wall-clock tokens/s (min / median / max) with ratios of medians, and tokens per
    CPU-second (all processes of the row: this one and vLLM's worker) with the same ratios, which
    other load on the machine distorts less."""
    lines = []
    for work, rows in results.items():
        med = {name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
               for name, runs in rows.items() if runs}
        raw, loop = med.get("raw generate", (None, None)), med.get("per-prompt loop", (None, None))
        lines.append(f"\n{work}: generated tokens per second (wall: min / median / max over repeats; "
                     "cpu: median tokens per CPU-second); ratios of medians")
        lines.append(f"  {'row':<18} {'min':>7} {'median':>7} {'max':>7} {'vs raw':>7} {'vs loop':>7}   "
                     f"{'cpu':>7} {'vs raw':>7} {'vs loop':>7}")
        for name, runs in rows.items():
            if not runs:
                continue
            lo, mid, hi = summarize([r[0] for r in runs])
            cpu = med[name][1]
            lines.append(f"  {name:<18} {lo:7.0f} {mid:7.0f} {hi:7.0f} {ratio(mid, raw[0]):>7} {ratio(mid, loop[0]):>7}   "
                         f"{cpu:7.0f} {ratio(cpu, raw[1]):>7} {ratio(cpu, loop[1]):>7}")
    return "\n".join(lines)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, plus that of process ``pid`` and its waited-for children."""
    total = time.process_time()
    if pid is not None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores usable, {platform.system()} {platform.release()}"


def load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ------------------------------------------------------------------------------ a finished job
def stage_times(job_dir: Path) -> list[tuple[str, float | None, dict]]:
    """(stage, wall seconds, recorded figures) per completed stage of a job directory.

    Wall seconds are the gaps between successive ``DONE.json`` writes (the first measured from
    ``job_state.json``'s start), so a stage's time includes any unmarked work just before it;
    recorded figures are ``*_s`` fields of its record and ``cost/*`` metrics where present."""
    records = sorted(job_dir.rglob("DONE.json"), key=lambda p: p.stat().st_mtime)
    state = job_dir / "job_state.json"
    prev = json.loads(state.read_text()).get("started_at") if state.exists() else None
    out = []
    for path in records:
        mtime = path.stat().st_mtime
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            rec = {}
        figures = {k: v for k, v in rec.items() if k.endswith("_s") and isinstance(v, (int, float))}
        for key in ("dpo", "cost"):
            if isinstance(rec.get(key), dict):
                figures.update({f"{key}.{k}": v for k, v in rec[key].items()
                                if isinstance(v, (int, float)) and (k.endswith("_s") or key == "cost")})
        metrics = rec.get("metrics") if isinstance(rec.get("metrics"), dict) else {}
        figures.update({k: v for k, v in metrics.items() if k.startswith("cost/") or k.endswith("runtime_s")})
        out.append((str(path.parent.relative_to(job_dir)), None if prev is None else mtime - prev, figures))
        prev = mtime
    return out


def print_job(job_dir: Path) -> None:
    rows = stage_times(job_dir)
    if not rows:
        sys.exit(f"no DONE.json under {job_dir}: is it a job directory (outputs/<overrides>)?")
    print(f"time per stage of {job_dir} (in completion order)")
    print(f"  {'stage':<16} {'wall s':>8}  recorded")
    total = 0.0
    for stage, wall, figures in rows:
        total += wall or 0.0
        shown = ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
        print(f"  {stage:<16} {'-' if wall is None else f'{wall:8.1f}':>8}  {shown}")
    print(f"  {'total':<16} {total:8.1f}")


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--job", type=Path, help="print the time per stage of this finished job directory and exit")
    ap.add_argument("--model", type=Path, help="a saved full-weights model (e.g. a job's sft/model) instead of M0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=32, help="candidate prompts (x N=4)")
    ap.add_argument("--judge-items", type=int, default=128,
                    help="judged responses (x K=3; the default run judges 32 prompts x N=4 = 128 per call)")
    ap.add_argument("--loop-items", type=int, default=8, help="prompts the per-prompt loop runs on")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of both backends (default: all usable)")
    ap.add_argument("--backends", default="hf,vllm", help="srscale rows: hf, vllm or both")
    ap.add_argument("--no-baselines", action="store_true", help="skip the raw generate and per-prompt loop rows")
    ap.add_argument("--vllm-python", default=None, help="vLLM venv's python (default: .venv-vllm of the checkout)")
    ap.add_argument("--vllm-eager", choices=("auto", "yes", "no"), default="auto")
    ap.add_argument("--vllm-chunk", type=int, default=None,
                    help="generation.vllm_chunk_sequences (gated calls; default: one engine batch, max_num_seqs)")
    ap.add_argument("--vllm-block-size", type=int, default=None,
                    help="generation.vllm_block_size (default: srscale's, 32 on the CPU)")
    ap.add_argument("--vllm-exact-top-p", action="store_true",
                    help="generation.vllm_fast_top_p=false: vLLM's own top-p (a sort of the vocabulary per step)")
    ap.add_argument("--workloads", default="candidates,judging")
    ap.add_argument("--cache-dir", default=os.environ.get("SRSCALE_CACHE", str(Path.home() / ".cache" / "srscale")))
    args = ap.parse_args(argv)
    if args.job:
        print_job(args.job)
        return

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from srscale.config import ModelConfig
    from srscale.generation import HFSampler
    from srscale.models import load_tokenizer

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    path, template = default_model(args.cache_dir)
    if args.model:
        path = str(args.model)
    tok = load_tokenizer(ModelConfig(name="tiny", source="hub", hub_id=path), path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    work = workloads(tok, template, args.prompts, args.judge_items, sets=args.repeats + 1)
    work = {k: v for k, v in work.items() if k in args.workloads.split(",")}
    load_before = load()

    rows: dict[str, callable] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    engine = None
    notes = []
    if "hf" in backends:
        hf = HFSampler(model, tok, batch_size=32)
        rows["srscale hf"] = lambda texts, params, gated, seed: run_sampler(hf, texts, params, gated, seed)
    if "vllm" in backends:
        from srscale.vllm_sampler import VLLMEngine, checkout_root, resolve_vllm_python

        python = resolve_vllm_python(args.vllm_python, checkout=checkout_root())
        eager = {"auto": None, "yes": True, "no": False}[args.vllm_eager]
        t = time.perf_counter()
        engine = VLLMEngine(path, tok, python=python, dtype="float32", max_model_len=512 + 96, threads=threads,
                            enforce_eager=eager, cpu_kv_cache_gib=1, chunk_sequences=args.vllm_chunk,
                            block_size=args.vllm_block_size, fast_top_p=not args.vllm_exact_top_p, log_path=Path("/tmp") / "srscale-bench-vllm.log")
        vs = engine.sampler(None)
        started = time.perf_counter() - t
        notes.append(f"vLLM {engine.version}: block size {engine.engine_args.get('block_size', 'default')}, "
                     f"top-p from candidates: {engine.fast_top_p}")
        notes.append(f"vLLM {engine.version} start-up: {started:.1f} s (" + ", ".join(
            f"{e['event']} {e['s']:.1f} s" for e in engine.timings) + "), paid once per job; log: "
            f"{engine.log_path}")
        rows["srscale vllm"] = lambda texts, params, gated, seed: run_sampler(vs, texts, params, gated, seed)
    if not args.no_baselines:
        rows["raw generate"] = lambda texts, params, gated, seed: run_raw(model, tok, texts, params, seed)
        rows["per-prompt loop"] = lambda texts, params, gated, seed: run_loop(
            model, tok, texts[:args.loop_items], params, seed)

    # Warm-up: one small call per row, so first-call costs do not land in the first repeat.
    for fn in rows.values():
        for texts, params, gated in work.values():
            fn(texts[0][:2], params, gated, 0)

    results: dict[str, dict[str, list[tuple[float, float]]]] = {w: {name: [] for name in rows} for w in work}
    names = list(rows)
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for wname, (sets, params, gated) in work.items():
            texts = sets[r + 1]  # this repeat's own texts, the same for every row
            for name in order:
                pid = engine._proc.proc.pid if engine is not None and name == "srscale vllm" else None
                c, t = cpu_seconds(pid), time.perf_counter()
                tokens = rows[name](texts, params, gated, 1000 + r)
                dt, dc = time.perf_counter() - t, cpu_seconds(pid) - c
                results[wname][name].append((tokens / dt, tokens / max(dc, 1e-9)))
                print(f"  repeat {r + 1}/{args.repeats} {wname:<10} {name:<16} {tokens:6d} tokens {dt:7.2f} s "
                      f"{tokens / dt:7.0f} tok/s  (cpu {dc:6.2f} s)", flush=True)
    chunk = args.vllm_chunk or (engine.max_num_seqs if engine is not None else None)
    if engine is not None:
        engine.close()

    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}  {machine()}")
    print(f"torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}; "
          f"load average before {load_before}, after {load()}")
    print(f"model: {path}")
    print(f"candidates: {args.prompts} prompts x N=4, 40 new tokens; judging: {args.judge_items} judge "
          f"prompts x K=3, 96 new tokens, in requests of {chunk} sequences on vLLM; per-prompt "
          f"loop on {args.loop_items} prompts")
    for note in notes:
        print(note)
    print(table(results))


if __name__ == "__main__":
    main()
