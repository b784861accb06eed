"""The vLLM backend of the sampler seam (:mod:`srscale.sampling`), on the job's side of a process boundary.

vLLM runs in its own Python environment (its transformers bound conflicts with srscale's pins), as
one long-lived worker process per job (:mod:`srscale.vllm_worker`) spoken to over a pipe in JSON
lines. :class:`VLLMEngine` owns that process and serves the job's stage models one at a time;
:class:`VLLMSampler` is what stages generate with.

What crosses the boundary is token ids: texts are tokenized (and cut on the left past
``max_input_tokens``) here with the job's HF tokenizer, exactly as the HF backend does, and the
generated ids come back and are decoded here with the same tokenizer, so both backends decode alike.

Semantics kept equal to :class:`srscale.generation.HFSampler`: stop on :func:`stop_token_ids`, at
most ``max_new_tokens``, ``finish_reason`` from the tokens, completion ``j`` of text ``i`` seeded from
``item_seed(seed, i)`` (vLLM derives sample ``j``'s stream from it), greedy samples identical. One
request per text carries ``n`` samples (vLLM shares the prompt's prefill among them; the prompt's
tokens are counted on the first completion only). With ``on_result`` the texts go in chunks, in
input order, so a stop request lands within one chunk; otherwise all at once.

Weights: a LoRA stage is a ``LoRARequest`` on the one engine (a unique id per adapter directory and
version); a full-weights stage is loaded in place (``reload_weights``), the engine is not restarted.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srscale.errors import SrscaleError
from srscale.sampling import (
    Completion,
    InOrderDelivery,
    OnResult,
    SamplingParams,
    item_seed,
    stop_token_ids,
)

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("vllm_worker.py")
SETUP_HINT = "run scripts/setup_vllm.sh (makes .venv-vllm) or set generation.vllm_python=/path/to/python"
# vLLM 0.32 accepts only these values of max_lora_rank (vllm/config/lora.py, MaxLoRARanks).
LORA_RANK_SLOTS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
RELEASE_MODES = ("auto", "sleep", "restart", "keep")


# ------------------------------------------------------------------------------ pure helpers
def checkout_root() -> Path | None:
    """The source checkout this module runs from (None for an installed, non-editable srscale)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else None


def resolve_vllm_python(configured: str | None, environ: dict | None = None,
                        checkout: Path | None = None) -> Path:
    """The interpreter of vLLM's environment: ``generation.vllm_python``, else
    ``$SRSCALE_VLLM_PYTHON``, else ``.venv-vllm/bin/python`` of the checkout (or of the working
    directory). Raises one SrscaleError line when none exists."""
    environ = os.environ if environ is None else environ
    if configured:
        candidates = [("generation.vllm_python", Path(configured).expanduser())]
    elif environ.get("SRSCALE_VLLM_PYTHON"):
        candidates = [("$SRSCALE_VLLM_PYTHON", Path(environ["SRSCALE_VLLM_PYTHON"]).expanduser())]
    else:
        roots = [r for r in (checkout, Path.cwd()) if r is not None]
        candidates = [(".venv-vllm", r / ".venv-vllm" / "bin" / "python") for r in dict.fromkeys(roots)]
    for _, path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    where, path = candidates[0]
    raise SrscaleError(f"generation.backend=vllm: no vLLM Python at {path} ({where}); {SETUP_HINT}")


def lora_rank_slot(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds adapters of rank ``rank``."""
    for slot in LORA_RANK_SLOTS:
        if slot >= rank:
            return slot
    raise SrscaleError(f"lora.r={rank}: vLLM serves LoRA ranks up to {LORA_RANK_SLOTS[-1]}; "
                       "use a smaller lora.r or generation.backend=hf")


# KV-cache block of the CPU engine. vLLM's CPU default is 128 tokens, and a prompt shares cached
# blocks only whole: a judge rubric of 171 tokens then shares 128. With 32 (the smallest the CPU
# attention takes) it shares 160, and judging measured about 10% faster on tiny_1m (README, "Speed").
CPU_BLOCK_SIZE = 32


def engine_args(model: str, *, dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
                lora_rank: int | None = None, cuda: bool = False, gpu_memory_utilization: float = 0.85,
                enforce_eager: bool | None = None, trust_remote_code: bool = False,
                revision: str | None = None, quantization: str | None = None,
                block_size: int | None = None) -> dict:
    """Keyword arguments of ``vllm.LLM`` for a job's engine (what the worker's ``start`` receives).

    No tokenizer is loaded (token ids cross the boundary), and the model's ``generation_config.json``
    is not applied: :class:`SamplingParams` alone defines sampling, as in the HF backend. ``enforce_eager=None`` keeps vLLM's default (torch.compile,
    and CUDA graphs on a GPU: measured on the CPU, about 25% more tokens/s than eager for a start-up
    longer by 20 to 50 s). Sleep mode is enabled on CUDA, where it exists. On the CPU
    ``max_model_len`` should be given (chunked prefill is off there, so one scheduler step must hold
    a whole prompt). ``block_size`` (tokens per KV-cache block, the granularity at which prompts
    share a cached prefix) None keeps vLLM's default on a GPU and is :data:`CPU_BLOCK_SIZE` on the CPU.
    """
    args: dict[str, Any] = {"model": model, "skip_tokenizer_init": True, "generation_config": "vllm",
                            "dtype": dtype, "seed": seed, "trust_remote_code": trust_remote_code,
                            "enable_prefix_caching": True, "disable_log_stats": True}
    if enforce_eager is not None:
        args["enforce_eager"] = enforce_eager
    if max_model_len is not None:
        args["max_model_len"] = max_model_len
    if revision:
        args["revision"] = revision
    if quantization:
        args["quantization"] = quantization
    if lora_rank is not None:
        args.update(enable_lora=True, max_lora_rank=lora_rank_slot(lora_rank), max_loras=1)
    if cuda:
        args.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=True)
    else:
        # vLLM 0.32 on the CPU: a seeded request whose prefill is split over scheduler steps crashes
        # ("CPU Generator does not use offset": rewinding a discarded sample needs CUDA's Philox
        # offsets). Without chunked prefill no sample is discarded; a step then holds whole prompts.
        args.update(enable_chunked_prefill=False, max_num_batched_tokens=max(4096, max_model_len or 0))
        block_size = block_size or CPU_BLOCK_SIZE
    if block_size is not None:
        args["block_size"] = block_size
    return args


def worker_env(base: dict, *, threads: int | None = None, cpus: Sequence[int] | None = None,
               cpu_kv_cache_gib: int = 2, in_process: bool = True) -> dict:
    """The worker's environment: srscale's Python paths removed (the worker has its own venv), no
    usage reporting, vLLM's CPU threads bound to ``threads`` of ``cpus`` (the cores this process may
    use), a ``cpu_kv_cache_gib`` KV cache on the CPU, and the engine core in the worker's process
    (``in_process``: one process to start and to end, and a quicker start)."""
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env.update(VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1", VLLM_HOST_IP="127.0.0.1",
               VLLM_CPU_KVCACHE_SPACE=str(cpu_kv_cache_gib), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    chosen = cpus[:threads] if threads else cpus
    env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in chosen)
    env["OMP_NUM_THREADS"] = str(len(chosen))
    if in_process:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return env


def model_positions(model_dir: str | Path) -> int | None:
    """``max_position_embeddings`` of a saved model's ``config.json`` (None when absent)."""
    path = Path(model_dir) / "config.json"
    try:
        value = json.loads(path.read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


# vLLM 0.32's CPU attention (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def cpu_head_size_problem(model_dir: str | Path) -> str | None:
    """Why vLLM's CPU build cannot run the model saved at ``model_dir`` (None when it can, or when
    its ``config.json`` does not say): its attention head size must be one of :data:`CPU_HEAD_SIZES`."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    if head in CPU_HEAD_SIZES:
        return None
    return (f"vLLM's CPU build supports attention head sizes {', '.join(map(str, CPU_HEAD_SIZES))}; the model at "
            f"{model_dir} has {head}; use generation.backend=hf for it (e.g. tiny_300k), or fewer, wider heads")


def vllm_sampling_params(params: SamplingParams, stops: Sequence[int]) -> dict:
    """``vllm.SamplingParams`` keywords for srscale's params (seed and detokenize are added per request).

    Greedy asks for one sample (vLLM refuses n > 1 when greedy); the caller repeats it ``n`` times."""
    out = {"n": 1 if params.greedy else params.n, "max_tokens": params.max_new_tokens,
           "stop_token_ids": list(stops), "temperature": 0.0 if params.greedy else params.temperature,
           "top_p": 1.0 if params.greedy else params.top_p}
    return out


def encode_prompts(tokenizer, texts: Sequence[str], max_input_tokens: int | None = None,
                   fit: int | None = None) -> tuple[list[list[int]], list[bool]]:
    """Token ids of templated texts, cut on the left past ``max_input_tokens`` (as
    :func:`srscale.generation.encode_batch` does, without the padding), and further to ``fit``
    tokens (what the engine's context leaves for the generation budget). Returns (ids, cut flags)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    limits = [x for x in (max_input_tokens, fit) if x is not None]
    if not limits:
        return [list(x) for x in ids], [False] * len(ids)
    limit = max(1, min(limits))
    return [list(x[-limit:]) for x in ids], [len(x) > limit for x in ids]


def completions_from_tokens(tokenizer, samples: Sequence[Sequence[int]], prompt_tokens: int,
                            input_truncated: bool, stops: Sequence[int]) -> list[Completion]:
    """Completions of one text from the generated ids of its samples, decoded as HFSampler does:
    kept up to and including the first stop token, special tokens skipped, stripped. The prompt's
    tokens are counted on the first sample only (its prefill is shared)."""
    stop_set = set(stops)
    kept, reasons = [], []
    for ids in samples:
        ended = next((k for k, t in enumerate(ids) if t in stop_set), None)
        kept.append(list(ids) if ended is None else list(ids[:ended + 1]))
        reasons.append("length" if ended is None else "stop")
    texts = tokenizer.batch_decode(kept, skip_special_tokens=True)
    return [Completion(text=t.strip(), finish_reason=r, prompt_tokens=prompt_tokens if j == 0 else 0,
                       new_tokens=len(k), input_truncated=input_truncated)
            for j, (t, r, k) in enumerate(zip(texts, reasons, kept, strict=True))]


def chunk_ranges(n_texts: int, chunk: int | None) -> list[range]:
    """Consecutive index ranges covering ``n_texts`` in input order (one range when ``chunk`` is None)."""
    step = n_texts if not chunk else chunk
    return [range(s, min(s + step, n_texts)) for s in range(0, n_texts, max(step, 1))]


# Sequences per request with a callback that may stop generation, where neither the config nor the
# engine says (vLLM reports its scheduler's max_num_seqs: 256 on the CPU, 256 to 1024 on GPUs).
DEFAULT_CHUNK = 256


def texts_per_chunk(chunk_sequences: int, n: int) -> int:
    """Texts per chunk so that a chunk holds about ``chunk_sequences`` sequences (at least one text)."""
    return max(1, chunk_sequences // n)


def default_max_model_len(configured: int | None, model_max_length: int, budgets: Sequence[int],
                          max_position_embeddings: int | None) -> int:
    """The engine's context: ``generation.vllm_max_model_len``, else the longest input the job feeds
    (``model.max_length``) plus its largest generation budget, capped at the model's positions."""
    if configured is not None:
        return configured
    want = model_max_length + max(budgets, default=0)
    return min(want, max_position_embeddings) if max_position_embeddings else want


def resolve_release(mode: str, cuda: bool) -> str:
    """What ``release()`` does: ``auto`` sleeps on CUDA (frees GPU memory, weights kept in CPU RAM)
    and keeps the engine as it is on the CPU, where vLLM has no sleep mode and no accelerator
    memory is held (a restart there costs the engine's start-up again)."""
    if mode not in RELEASE_MODES:
        raise SrscaleError(f"generation.vllm_release={mode!r}: must be one of {', '.join(RELEASE_MODES)}")
    if mode == "auto":
        return "sleep" if cuda else "keep"
    if mode == "sleep" and not cuda:
        return "restart"  # vLLM's CPU worker ignores sleep(): restarting is the only way to free it
    return mode


def _tail(path: Path | None, lines: int = 1) -> str:
    if path is None or not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 8192))
        text = fh.read().decode("utf-8", "replace")
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


# ------------------------------------------------------------------------------ the process
class WorkerProcess:
    """The worker process and its pipe: ``call(op, **args)`` sends one request, returns its reply.

    Its stderr (vLLM's logs, tracebacks) is appended to ``log_path``. A worker that exits, or
    answers with an error, raises :class:`SrscaleError` naming the log."""

    def __init__(self, python: Path, log_path: Path, env: dict):
        self.python, self.log_path = python, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self._log.write(f"\n=== srscale vLLM worker {time.strftime('%Y-%m-%d %H:%M:%S')} ({python})\n".encode())
        self._log.flush()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, text=True, encoding="utf-8", bufsize=1)
        first = self._read("starting")
        if not first.get("ok"):
            self.close()
            if first.get("kind") == "import":
                raise SrscaleError(f"generation.backend=vllm: {python} cannot import vllm ({first['error']}); "
                                   f"{SETUP_HINT}")
            raise SrscaleError(f"vLLM worker failed to start: {first.get('error')}; see {log_path}")
        self.info = first

    def _read(self, doing: str) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=30)
            hint = " (killed: out of memory?)" if code in (-9, 137) else ""
            last = _tail(self.log_path)
            raise SrscaleError(f"vLLM worker exited with code {code}{hint} while {doing}; its log is {self.log_path}"
                               + (f" (last line: {last[:300]})" if last else "")
                               + "; rerun, or use generation.backend=hf")
        try:
            return json.loads(line)
        except ValueError:
            raise SrscaleError(f"vLLM worker sent a malformed reply while {doing}: {line[:200]!r}; "
                               f"see {self.log_path}") from None

    def call(self, op: str, **args) -> dict:
        with self._lock:
            if self.proc.poll() is not None:
                raise SrscaleError(f"vLLM worker is not running (exit code {self.proc.returncode}); "
                                   f"its log is {self.log_path}")
            try:
                self.proc.stdin.write(json.dumps({"op": op, **args}, separators=(",", ":")) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the reply read below reports the exit
            return self._read(f"handling '{op}'")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 60.0) -> None:
        """Ask the worker to stop, wait for it, kill it if it does not go."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self._log.close()


# ------------------------------------------------------------------------------ engine and sampler
class VLLMEngine:
    """A job's vLLM engine (implements :class:`srscale.sampling.Engine`).

    ``base_path``: the base model directory; ``tokenizer``: the job's HF tokenizer (chat template
    set). ``lora_rank``: the job's ``lora.r`` when stages are LoRA adapters (None: full fine-tuning,
    no LoRA in the engine). The worker starts at the first ``sampler()`` (or ``version``), once per
    job; ``release()`` before training follows ``release`` (see :func:`resolve_release`).
    ``timings`` records what the engine spent its time on (start, reload, sleep, wake) in seconds.
    """

    backend = "vllm"

    def __init__(self, base_path: str | Path, tokenizer, *, lora_rank: int | None = None,
                 python: str | Path | None = None, log_path: str | Path | None = None, dtype: str = "auto",
                 max_model_len: int | None = None, seed: int = 0, gpu_memory_utilization: float = 0.85,
                 enforce_eager: bool | None = None, release: str = "auto", chunk_sequences: int | None = None,
                 threads: int | None = None, cpu_kv_cache_gib: int = 2, in_process: bool = True,
                 trust_remote_code: bool = False, revision: str | None = None, quantization: str | None = None,
                 block_size: int | None = None, fast_top_p: bool = True):
        self.base_path, self.tokenizer = str(base_path), tokenizer
        self.fast_top_p = fast_top_p  # asked for; after start, whether the worker installed it (CPU only)
        self.lora_rank = lora_rank
        self.python = Path(python) if python else resolve_vllm_python(None, checkout=checkout_root())
        if not self.python.is_file():
            raise SrscaleError(f"generation.backend=vllm: no vLLM Python at {self.python}; {SETUP_HINT}")
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"srscale-vllm-{os.getpid()}.log"
        self.release_mode = release
        resolve_release(release, False)  # validate now
        self.chunk_sequences = chunk_sequences  # None: one batch of the engine's scheduler (max_num_seqs)
        if max_model_len is None:
            max_model_len = model_positions(self.base_path)
        self._args = {"dtype": dtype, "seed": seed, "max_model_len": max_model_len, "lora_rank": lora_rank,
                      "gpu_memory_utilization": gpu_memory_utilization, "enforce_eager": enforce_eager,
                      "trust_remote_code": trust_remote_code, "revision": revision, "quantization": quantization,
                      "block_size": block_size}
        self._env = {"threads": threads, "cpu_kv_cache_gib": cpu_kv_cache_gib, "in_process": in_process}
        self._proc: WorkerProcess | None = None
        self._started = False
        self._asleep = 0  # sleep level, 0 = awake
        self._weights: str | None = None  # directory of the full weights the engine holds
        self._lora_ids: dict[tuple[str, int], int] = {}
        self.max_model_len: int | None = None
        self.max_num_seqs: int | None = None  # sequences one scheduler step may hold (after start)
        self.engine_args: dict = {}  # the vllm.LLM keywords of the running engine
        self.timings: list[dict] = []

    @classmethod
    def from_config(cls, cfg, models, job_dir: str | Path | None = None) -> VLLMEngine:
        """The job's engine from its config and its :class:`srscale.engines.ModelCache` (base path,
        tokenizer); see :func:`vllm_engine`. Pass ``job_dir`` to keep the worker's log in the job."""
        return vllm_engine(cfg, models.base_path, models.tokenizer(), job_dir)

    # --------------------------------------------------------------- process and engine state
    def _process(self) -> WorkerProcess:
        if self._proc is None or not self._proc.alive:
            t = time.perf_counter()
            env = worker_env(dict(os.environ), **self._env)
            self._proc = WorkerProcess(self.python, self.log_path, env)
            self._started, self._asleep, self._weights = False, 0, None
            self.timings.append({"event": "process", "s": time.perf_counter() - t,
                                 "import_s": self._proc.info.get("import_s")})
        return self._proc

    def _call(self, op: str, **args) -> dict:
        reply = self._process().call(op, **args)
        if not reply.get("ok"):
            raise SrscaleError(f"vLLM {op} failed: {reply.get('error')}; see {self.log_path}")
        return reply

    @property
    def version(self) -> str:
        return str(self._process().info["version"])

    @property
    def cuda(self) -> bool:
        return bool(self._process().info.get("cuda"))

    def _start(self, weights: str) -> None:
        proc = self._process()
        problem = None if self.cuda else cpu_head_size_problem(weights)
        if problem:
            raise SrscaleError(problem)
        args = engine_args(weights, cuda=self.cuda, **self._args)
        t = time.perf_counter()
        reply = proc.call("start", args=args, fast_top_p=self.fast_top_p)
        if not reply.get("ok"):
            raise SrscaleError(f"vLLM cannot load the model at {weights}: {reply.get('error', '')[:300]}; "
                               f"its log is {self.log_path}; use generation.backend=hf for this model")
        self._started, self._weights, self.engine_args = True, weights, args
        self.fast_top_p = bool(reply.get("fast_top_p"))
        self.max_model_len = reply.get("max_model_len") or self._args["max_model_len"]
        self.max_num_seqs = reply.get("max_num_seqs")
        self.timings.append({"event": "start", "s": time.perf_counter() - t})

    def _reload(self, weights: str) -> None:
        t = time.perf_counter()
        self._call("reload", path=weights)
        self._weights = weights
        self.timings.append({"event": "reload", "s": time.perf_counter() - t})

    def _lora(self, adapter: str) -> dict:
        path = os.path.realpath(adapter)
        cfg = json.loads((Path(path) / "adapter_config.json").read_text())
        if self.lora_rank is None:
            raise SrscaleError(f"{adapter} is a LoRA adapter but the vLLM engine was started for full "
                               "fine-tuning; start it with the job's lora.r (VLLMEngine(lora_rank=...))")
        if int(cfg.get("r", 0)) > lora_rank_slot(self.lora_rank):
            raise SrscaleError(f"adapter {adapter} has rank {cfg.get('r')} > the engine's max_lora_rank "
                               f"{lora_rank_slot(self.lora_rank)}; set lora.r to the adapter's rank")
        weights = [p for p in Path(path).glob("adapter_model.*")]
        version = max((p.stat().st_mtime_ns for p in weights), default=0)
        key = (path, version)  # a re-saved adapter at the same path is a new adapter to vLLM
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        lid = self._lora_ids[key]
        return {"name": f"srscale-{lid}", "id": lid, "path": path}

    def serve(self, source: str | Path | None) -> dict | None:
        """Make the engine ready to generate with ``source``; the LoRA request to send, if any."""
        from srscale.models import is_adapter_dir

        adapter = is_adapter_dir(source)
        weights = self.base_path if source is None or adapter else str(source)
        if not self._started:
            self._start(weights)
        elif self._asleep:
            t = time.perf_counter()
            self._call("wake")
            level, self._asleep = self._asleep, 0
            self.timings.append({"event": "wake", "s": time.perf_counter() - t})
            if level == 2:  # weights were discarded: load them again
                self._reload(weights)
        if self._weights != weights:
            self._reload(weights)
        return self._lora(str(source)) if adapter else None

    # --------------------------------------------------------------- the Engine protocol
    def sampler(self, source: str | Path | None = None, chunk_sequences: int | None = None) -> VLLMSampler:
        """A sampler over ``source``; ``chunk_sequences`` overrides the engine's request size for it."""
        self.serve(source)
        return VLLMSampler(self, source, chunk_sequences)

    def release(self) -> None:
        """Free accelerator memory before a training stage (see :func:`resolve_release`)."""
        if not self._started:
            return
        mode = resolve_release(self.release_mode, self.cuda)
        if mode == "keep":
            return
        if mode == "sleep":
            level = 1 if self.lora_rank is not None else 2  # full fine-tuning replaces the weights anyway
            t = time.perf_counter()
            self._call("sleep", level=level)
            self._asleep = level
            self.timings.append({"event": "sleep", "s": time.perf_counter() - t, "level": level})
            return
        self.close()  # restart: the next sampler() starts the worker again

    def close(self) -> None:
        if self._proc is not None:
            t = time.perf_counter()
            self._proc.close()
            self._proc = None
            self.timings.append({"event": "close", "s": time.perf_counter() - t})
        self._started, self._asleep, self._weights = False, 0, None

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a job that forgets close() still ends its worker
        try:
            if self._proc is not None:
                self._proc.close(timeout=10)
        except Exception:  # noqa: BLE001
            pass


class VLLMSampler:
    """Sampler over one stage model of a :class:`VLLMEngine` (implements :class:`srscale.sampling.Sampler`).

    Each ``generate`` makes sure the engine holds this sampler's weights (another stage's sampler may
    have switched them), so an older sampler never generates with newer weights."""

    backend = "vllm"

    def __init__(self, engine: VLLMEngine, source: str | Path | None, chunk_sequences: int | None = None):
        self.engine, self.source = engine, source
        self.chunk_sequences = chunk_sequences  # None: the engine's
        self.tokenizer = engine.tokenizer
        self.version = engine.version

    def generate(self, texts: Sequence[str], params: SamplingParams, *, seed: int, desc: str = "generate",
                 on_result: OnResult | None = None,
                 max_input_tokens: int | None = None) -> list[list[Completion] | None]:
        from tqdm.auto import tqdm

        if not texts:
            return []
        engine, tok = self.engine, self.tokenizer
        lora = engine.serve(self.source)
        fit = engine.max_model_len - params.max_new_tokens if engine.max_model_len else None
        if fit is not None and fit < 1:
            raise SrscaleError(f"max_new_tokens={params.max_new_tokens} leaves no room for the prompt in the vLLM "
                               f"engine's context of {engine.max_model_len} tokens; raise generation.vllm_max_model_len")
        ids, cut = encode_prompts(tok, texts, max_input_tokens, fit)
        if fit is not None and (max_input_tokens is None or fit < max_input_tokens) and any(cut):
            log.warning("%s: %d of %d inputs cut on the left to %d tokens to fit the vLLM engine's context of %d "
                        "with max_new_tokens=%d (raise generation.vllm_max_model_len to keep more)", desc,
                        sum(cut), len(cut), fit, engine.max_model_len, params.max_new_tokens)
        stops = stop_token_ids(tok)
        vparams = vllm_sampling_params(params, stops)
        per_request = self.chunk_sequences or engine.chunk_sequences or engine.max_num_seqs or DEFAULT_CHUNK
        chunk = None if on_result is None else texts_per_chunk(per_request, params.n)
        delivery = InOrderDelivery(len(texts), on_result)
        bar = tqdm(total=len(texts) * params.n, desc=desc, leave=False)
        try:
            for idx in chunk_ranges(len(texts), chunk):
                reply = engine._call("generate", prompts=[ids[i] for i in idx],
                                     seeds=[item_seed(seed, i) for i in idx], params=vparams, lora=lora)
                for i, samples in zip(idx, reply["outputs"], strict=True):
                    token_lists = [s[0] for s in samples]
                    if params.greedy:  # one greedy sample stands for all n (they are identical)
                        token_lists = token_lists * params.n
                    delivery.add(i, completions_from_tokens(tok, token_lists, len(ids[i]), cut[i], stops))
                bar.update(len(idx) * params.n)
                if delivery.stopped:
                    break
        finally:
            bar.close()
        return delivery.results


# ------------------------------------------------------------------------------ from a job's config
def vllm_engine(cfg, base_path: str | Path, tokenizer, job_dir: str | Path | None = None) -> VLLMEngine:
    """The job's vLLM engine from its typed :class:`srscale.config.Config` (the pipeline's hook).

    The worker's log goes to ``<job_dir>/vllm_worker.log``."""
    gen, model = cfg.generation, cfg.model
    python = resolve_vllm_python(gen.vllm_python, checkout=checkout_root())
    budgets = [cfg.judge.max_new_tokens, cfg.self_reward.max_new_tokens, cfg.self_reward.instruct_max_new_tokens,
               cfg.eval.head_to_head.max_new_tokens, cfg.eval.mtbench.max_new_tokens,
               cfg.eval.mtbench.judge_max_tokens]  # the local judge (M1) answers through this engine too
    positions = model_positions(base_path)
    return VLLMEngine(
        base_path, tokenizer, lora_rank=cfg.lora.r if cfg.lora.enabled else None, python=python,
        log_path=Path(job_dir) / "vllm_worker.log" if job_dir else None, dtype=model.dtype,
        max_model_len=default_max_model_len(gen.vllm_max_model_len, model.max_length, budgets, positions),
        seed=cfg.seed, gpu_memory_utilization=gen.vllm_gpu_memory_utilization, enforce_eager=gen.vllm_enforce_eager,
        release=gen.vllm_release, chunk_sequences=gen.vllm_chunk_sequences, threads=gen.torch_threads,
        cpu_kv_cache_gib=gen.vllm_cpu_kv_cache_gib, trust_remote_code=model.trust_remote_code,
        revision=model.revision, quantization="bitsandbytes" if model.load_in_4bit else None,
        block_size=gen.vllm_block_size, fast_top_p=gen.vllm_fast_top_p)


if __name__ == "__main__":  # pragma: no cover - `python -m srscale.vllm_sampler` checks the setup
    python = resolve_vllm_python(None, checkout=checkout_root())
    proc = WorkerProcess(python, Path(tempfile.gettempdir()) / "srscale-vllm-check.log", worker_env(dict(os.environ)))
    print(f"vLLM {proc.info['version']} at {python} (cuda: {proc.info.get('cuda')})")
    proc.close()
    sys.exit(0)
