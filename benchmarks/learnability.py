"""Which suite families can a tiny model learn, and how fast? Answer-only training, held-out accuracy per family.

A probe for choosing the embedded default (issue 12): it trains a fresh Llama of a tiny-ladder shape on
``(prompt, reference answer)`` pairs of the chosen families (loss on the answer only, bare answers, no
judge data, constant learning rate after a short warm-up), optionally after causal-LM pretraining on the
suite's corpus, and prints the greedy held-out accuracy of every family at four checkpoints. Held-out
tasks are disjoint from the training tasks and kept out of the pretraining corpus.

    python benchmarks/learnability.py --families pick,repeat,extreme --steps 1600
    python benchmarks/learnability.py --families pick,repeat,extreme --pretrain-steps 600

It is not the pipeline's SFT (no chat template, no EFT mix, no cosine decay); the gap between the two is
what it measures. One thread; about 2.5 minutes for 1,600 steps of 16 at hidden 128 on this machine.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch


def _tasks(families, n_heldout: int, n_train: int, seed: int):
    """Held-out and train ``(prompt, answer)`` pairs, disjoint as tasks (family and spec)."""
    rng = random.Random(seed)
    used, held, train = set(), {f.name: [] for f in families}, []
    for f in families:
        for _ in range(100 * n_heldout):
            if len(held[f.name]) == n_heldout:
                break
            spec = f.sample_spec(rng)
            if (f.name, spec) not in used:
                used.add((f.name, spec))
                held[f.name].append((f.render(spec, rng), f.solve(spec)))
    k = 0
    for _ in range(100 * n_train):
        if len(train) == n_train:
            break
        f = families[k % len(families)]
        spec = f.sample_spec(rng)
        if (f.name, spec) not in used:
            k += 1
            used.add((f.name, spec))
            train.append((f.render(spec, rng), f.solve(spec)))
    return held, train


def _question(prompt: str, chat: bool) -> str:
    """The prompt in the pipeline's chat template (``chat``) or as ``Question: ... Answer:``."""
    if chat:
        return f"<|user|>\n{prompt}<|end|>\n<|assistant|>\n"
    return f"Question: {prompt}\nAnswer:"


def _accuracy(model, tok, held, chat: bool) -> dict[str, float]:
    from srscale.suite.families import CORRECT_MIN, grade

    model.eval()
    out = {}
    for fam, pairs in held.items():
        ok = 0
        for prompt, _ in pairs:
            ids = tok(_question(prompt, chat), return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
            text = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            ok += (grade(prompt, text) or 0) >= CORRECT_MIN
        out[fam] = ok / len(pairs)
    model.train()
    return out


def main() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from srscale import tinymodel
    from srscale.config import TinyArchConfig
    from srscale.suite.build import _resolve_families, pretrain_corpus

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default=None, help="comma-separated; default: the suite's default nine")
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-tasks", type=int, default=3000)
    p.add_argument("--heldout", type=int, default=40, help="held-out tasks per family")
    p.add_argument("--pretrain-steps", type=int, default=0)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat", action="store_true", help="prompts in the pipeline's chat template")
    p.add_argument("--sentence-forms", action="store_true",
                   help="every other answer as 'The answer is X.', as the pipeline's IFT rows")
    a = p.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    names = a.families.split(",") if a.families else None
    families = _resolve_families(names)
    held, train = _tasks(families, a.heldout, a.train_tasks, seed=99 + a.seed)
    texts = pretrain_corpus(12000, seed=a.seed, exclude=[q for v in held.values() for q, _ in v], families=names)
    tok = tinymodel.train_tokenizer(texts, 4096)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.heads,
                      max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    params = sum(t.numel() for t in model.parameters())
    if a.pretrain_steps:
        arch = TinyArchConfig(vocab_size=4096, hidden_size=a.hidden, num_layers=a.layers, num_heads=a.heads,
                              num_kv_heads=a.heads, intermediate_size=a.intermediate, pretrain_steps=a.pretrain_steps,
                              pretrain_batch_size=16, pretrain_lr=6e-3, corpus_examples=12000, seed=a.seed)
        tinymodel.pretrain(model, tok, texts, arch)
    print(f"{params / 1e6:.2f}M parameters, {len(train)} train tasks, {a.heldout} held out per family, "
          f"pretraining {a.pretrain_steps} steps")
    before = _accuracy(model, tok, held, a.chat)
    data = []
    for i, (prompt, answer) in enumerate(train):
        q = tok(_question(prompt, a.chat), add_special_tokens=False)["input_ids"]
        text = f"The answer is {answer}." if a.sentence_forms and i % 2 else answer
        text = text if a.chat else " " + text
        data.append((q, tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    rng = random.Random(a.seed)
    rows = [("0", before)]
    t0 = time.perf_counter()
    model.train()
    for step in range(1, a.steps + 1):
        batch = [data[rng.randrange(len(data))] for _ in range(a.batch_size)]
        width = max(len(q) + len(r) for q, r in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (q, r) in enumerate(batch):
            ids[i, :len(q) + len(r)] = torch.tensor(q + r)
            mask[i, :len(q) + len(r)] = 1
            labels[i, len(q):len(q) + len(r)] = torch.tensor(r)
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, step / 50)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % max(1, a.steps // 4) == 0 or step == a.steps:
            rows.append((str(step), _accuracy(model, tok, held, a.chat)))
    fams = list(held)
    print(f"training: {time.perf_counter() - t0:.0f} s")
    print("| step | " + " | ".join(fams) + " | mean |")
    print("|---" * (len(fams) + 2) + "|")
    for step, acc in rows:
        print(f"| {step} | " + " | ".join(f"{acc[f]:.2f}" for f in fams) + f" | {sum(acc.values()) / len(acc):.2f} |")
    print(json.dumps({"final": rows[-1][1]}))


if __name__ == "__main__":
    main()
