"""The server side of srscale's vLLM backend: one vLLM engine, driven over a pipe.

Runs in vLLM's own Python environment (``scripts/setup_vllm.sh`` makes ``.venv-vllm``), started by
:class:`srscale.vllm_sampler.VLLMEngine` as ``python vllm_worker.py``. It imports only the standard
library and vllm, so that environment needs nothing of srscale's stack (whose transformers pin
vLLM cannot use).

Protocol: one JSON object per line. Requests come on stdin; replies go to the stdout the process
was started with, one per request, in order. Everything else this process or vLLM prints goes to
stderr (the client sends it to a log file): file descriptor 1 is pointed at stderr before vllm is
imported, because vLLM's logger writes to stdout. The first line sent is a ``ready`` event (or an
``import`` error). Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "...", "kind": ...}``.

Requests (``op``):

* ``start``: ``{"args": {...}, "fast_top_p": bool}`` -> build ``vllm.LLM(**args)`` (the client decides
  the arguments); on the CPU ``fast_top_p`` (default true) installs :func:`install_fast_top_p` first.
* ``generate``: ``{"prompts": [[ids]], "seeds": [int], "params": {...}, "lora": {name, id, path} | null}``
  -> ``{"outputs": [[[token_ids, finish_reason], ... n], ...]}``, in prompt order; ``params`` are
  ``vllm.SamplingParams`` keywords, shared by all prompts, each prompt with its own seed.
* ``reload``: ``{"path": dir}`` -> reload full weights in place, then drop the prefix cache.
* ``sleep`` ``{"level": 1|2}`` / ``wake``: vLLM's sleep mode (frees accelerator memory).
* ``shutdown``: stop the engine and exit.

Token ids only, both ways: the client tokenizes and decodes with the job's own tokenizer, so both
backends see and return exactly the same tokens.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _reply(channel, message: dict) -> None:
    channel.write(json.dumps(message, separators=(",", ":")) + "\n")
    channel.flush()


def _error(exc: BaseException, kind: str) -> dict:
    traceback.print_exc(file=sys.stderr)
    sys.stderr.flush()
    text = " ".join(str(exc).split()) or type(exc).__name__
    return {"ok": False, "error": f"{type(exc).__name__}: {text}"[:2000], "kind": kind}


def _retie_embeddings(worker) -> bool:
    """Tie the output head to the input embedding again after an in-place reload (run in vLLM's worker).

    vLLM 0.32's layerwise reload finds no ``lm_head`` weight in a tied checkpoint and skips the
    head ("ParallelLMHead: Failed to load weights"): its kernel state (on the CPU, a prepacked copy
    of the old embedding) is never rebuilt, so logits would come from the previous stage's weights.
    Re-tie it and rebuild that state. Models without tied embeddings are left alone.
    """
    runner = worker.model_runner
    model = runner.get_model()
    config = getattr(runner.model_config, "hf_text_config", None) or runner.model_config.hf_config
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if not getattr(config, "tie_word_embeddings", False) or head is None or embed is None:
        return False
    model.lm_head = head = head.tie_weights(embed)
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)
    return True


# ------------------------------------------------------------------------------ top-p on the CPU
TOP_P_CANDIDATES = 64


def top_p_from_candidates(logits, p, exact, candidates: int = TOP_P_CANDIDATES):
    """vLLM's top-p mask without sorting the vocabulary, where the ``candidates`` most likely tokens
    of a row hold more than its ``p`` (``exact`` does the other rows).

    The nucleus is what ``exact`` (vLLM's ``apply_top_k_top_p`` with no top-k) keeps: a token stays
    when it and every less likely token together hold more than ``1 - p`` of the mass, and the most
    likely token always stays. Sorting the whole vocabulary for that was about a fifth of vLLM's
    decoding time on the tiny models here (one sort of batch x vocab per step); a top-``candidates``
    selection finds the same set whenever the tokens outside it are masked anyway, that is when
    their mass is below ``1 - p`` (checked with a margin of 1e-5, so float rounding cannot move a
    token across the boundary). Works in place on ``logits`` (2-D) and returns it, as vLLM's does.
    """
    import torch

    probs = logits.softmax(dim=-1)
    top, idx = probs.topk(candidates, dim=-1)  # most likely first
    total = probs.sum(dim=-1, keepdim=True)
    covered = top.sum(dim=-1) > p + 1e-5
    at_or_below = total - (top.cumsum(dim=-1) - top)  # mass of each candidate and all less likely tokens
    keep = at_or_below > (1.0 - p).unsqueeze(1)
    keep[:, 0] = True
    out = torch.full_like(logits, float("-inf"))
    out.scatter_(1, idx, logits.gather(1, idx).masked_fill(~keep, float("-inf")))
    if not bool(covered.all()):
        rows = (~covered).nonzero().squeeze(1)
        out[rows] = exact(logits[rows], None, p[rows])
    logits.copy_(out)
    return logits


def install_fast_top_p() -> bool:
    """Route vLLM's top-p-only masking through :func:`top_p_from_candidates` (CPU engines, this
    process). False, changing nothing, where vLLM's sampler module is not laid out as in 0.32."""
    try:
        from vllm.v1.sample.ops import topk_topp_sampler as ops
    except ImportError:
        return False
    exact = getattr(ops, "apply_top_k_top_p", None)
    if exact is None or getattr(exact, "srscale_fast_top_p", False):
        return exact is not None

    def apply_top_k_top_p(logits, k, p):
        if k is not None or p is None or logits.dim() != 2 or logits.shape[1] <= TOP_P_CANDIDATES:
            return exact(logits, k, p)
        return top_p_from_candidates(logits, p, exact)

    apply_top_k_top_p.srscale_fast_top_p = True
    ops.apply_top_k_top_p = apply_top_k_top_p
    return True


class Server:
    """Holds the engine between requests. Methods return the reply's payload."""

    def __init__(self, vllm_module):
        self.vllm = vllm_module
        self.llm = None

    def start(self, args: dict, fast_top_p: bool = True) -> dict:
        if self.llm is not None:
            raise RuntimeError("the engine is already started")
        fast = bool(fast_top_p) and not _cuda() and install_fast_top_p()
        print(f"srscale: top-p from the {TOP_P_CANDIDATES} most likely tokens: {fast}", file=sys.stderr)
        t = time.perf_counter()
        self.llm = self.vllm.LLM(**args)
        scheduler = getattr(getattr(self.llm.llm_engine, "vllm_config", None), "scheduler_config", None)
        return {"start_s": time.perf_counter() - t, "fast_top_p": fast,
                "max_model_len": int(self.llm.llm_engine.model_config.max_model_len),
                "max_num_seqs": getattr(scheduler, "max_num_seqs", None)}

    def _engine(self):
        if self.llm is None:
            raise RuntimeError("no engine: send 'start' first")
        return self.llm

    def generate(self, prompts: list, seeds: list, params: dict, lora: dict | None = None) -> dict:
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        llm = self._engine()
        if len(seeds) != len(prompts):
            raise ValueError("one seed per prompt")
        sampling = [SamplingParams(seed=int(s), detokenize=False, **params) for s in seeds]
        request = None if lora is None else LoRARequest(lora["name"], int(lora["id"]), lora["path"])
        t = time.perf_counter()
        results = llm.generate([{"prompt_token_ids": list(p)} for p in prompts], sampling,
                               lora_request=request, use_tqdm=False)
        outputs = []
        for res in results:
            samples = sorted(res.outputs, key=lambda c: c.index)
            outputs.append([[list(c.token_ids), c.finish_reason] for c in samples])
        return {"outputs": outputs, "generate_s": time.perf_counter() - t}

    def reload(self, path: str) -> dict:
        llm = self._engine()
        t = time.perf_counter()
        llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        retied = any(llm.collective_rpc(_retie_embeddings))
        llm.reset_prefix_cache()  # cached keys/values were computed with the old weights
        return {"reload_s": time.perf_counter() - t, "retied": retied}

    def sleep(self, level: int = 1) -> dict:
        t = time.perf_counter()
        self._engine().sleep(level=int(level))
        return {"sleep_s": time.perf_counter() - t}

    def wake(self) -> dict:
        t = time.perf_counter()
        self._engine().wake_up()
        return {"wake_s": time.perf_counter() - t}

    def shutdown(self) -> dict:
        """Stop vLLM's engine processes, if it has any; the process then exits at once (main)."""
        if self.llm is not None and os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            try:
                self.llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - exiting anyway; its children watch for our death
                traceback.print_exc(file=sys.stderr)
        return {}


def serve(requests, channel, server: Server) -> None:
    """Answer requests until ``shutdown`` or end of input."""
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.pop("op")
            handler = getattr(server, op) if op in ("start", "generate", "reload", "sleep", "wake",
                                                   "shutdown") else None
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # noqa: BLE001 - reported to the client, which raises
            _reply(channel, _error(exc, "protocol"))
            continue
        try:
            payload = handler(**request)
        except Exception as exc:  # noqa: BLE001
            _reply(channel, _error(exc, "load" if op == "start" else op))
            continue
        _reply(channel, {"ok": True, **payload})
        if op == "shutdown":
            return


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def main() -> int:
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the protocol's own copy of stdout
    os.dup2(2, 1)  # anything else written to stdout (vLLM's logger, C libraries) lands in stderr
    sys.stdout = sys.stderr
    t = time.perf_counter()
    try:
        import vllm
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken dependency (OSError, ...)
        _reply(channel, _error(exc, "import"))
        return 3
    _reply(channel, {"ok": True, "event": "ready", "version": vllm.__version__, "cuda": _cuda(),
                     "python": sys.executable, "import_s": time.perf_counter() - t})
    serve(sys.stdin, channel, Server(vllm))
    # Exit without the interpreter's teardown: freeing the engine and its KV cache by hand took
    # 4 s and the teardown another 9 s here; the operating system frees both at once.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # vLLM spawns its engine processes, which re-import this file
    sys.exit(main())
