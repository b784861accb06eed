"""A tiny random Llama saved like a hub snapshot, and templated texts, for the sampler tests; and
where those tests find vLLM's venv.

Its weights are drawn large (``initializer_range`` 0.4, so attention and positions change the
outputs: a loop that fed wrong positions or a wrong cache would be caught), its output layer scaled up
(peaked next-token distributions, as a trained model has) and the end token's row more so, so that completions end at many different lengths, some on the end token and
some at the budget: that is what the ordering, stop and ``finish_reason`` rules are about. Built in
about a second; no network.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

VLLM_PYTHON = Path(os.environ.get("SRSCALE_VLLM_PYTHON",
                                  Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"))
NO_VLLM = f"vLLM venv not found at {VLLM_PYTHON}: run scripts/setup_vllm.sh"

WORDS = ("the a one two three model answer question score points user judge good bad write list name "
         "story short long count words letters number sum of and is are was").split()

# Measured on this model and ``texts()`` (2026-12-04, transformers 5.23): greedy, 6 of 10 end on the end
# token within 24 tokens (after 4, 5, 8, 9, 9 and 17); sampled at T 0.7 / top-p 0.9 with n=3 (seed 3),
# 19 of 30 do, and 8 of the 10 texts' samples differ.
INIT_STD = 0.4
LOGIT_SCALE = 2.0
EOS_BOOST = 1.5


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


def build_random_llama(directory: Path, seed: int = 0) -> Path:
    """Save a 2-layer Llama (hidden 64: two heads of 32 sharing one key/value head, so grouped-query
    attention, with the smallest head vLLM's CPU attention runs) and its chat tokenizer in ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from srscale.tinymodel import train_tokenizer

    tok = train_tokenizer(corpus(), 300)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, initializer_range=INIT_STD,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight *= LOGIT_SCALE
        model.lm_head.weight[tok.eos_token_id] *= EOS_BOOST
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def texts(tokenizer, n: int = 10, seed: int = 1) -> list[str]:
    """``n`` chat-templated user turns of 1 to 30 words (so inputs of quite different lengths)."""
    from srscale.sampling import render_chat, user_turn

    rng = random.Random(seed)
    return [render_chat(tokenizer, user_turn(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))))
            for _ in range(n)]
