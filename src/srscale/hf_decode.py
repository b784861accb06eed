"""A decode loop over a transformers model's KV cache that spends no decode step on a finished row.

Requests (one per text, with one seed per sample) are admitted in the order given, in groups: the
group's distinct prompts are prefilled together, left-padded to the group's longest (a prefix they all
share, such as a judge rubric, is prefilled once and copied); every sample of a prompt gets a copy of
its one prefilled cache row (a text's ``n`` samples, and texts repeated in the input); then every
step feeds one token per *live* row. A row leaves the batch
(cache rows, attention mask, positions, random stream) in the step it ends. When at least ``refill``
slots are free, the next group is prefilled apart and joined to the running batch: both are kept
right-aligned (the shorter side gets left padding), and columns that no live row uses any more are cut
from the left, so the cache is never longer than the longest live context.

Assumptions: a decoder-only model whose forward takes ``attention_mask``, ``position_ids`` and
``past_key_values`` (a ``DynamicCache``), as Llama, Qwen2, Phi and GPT-Neo do in transformers 5.
Joining, cutting and prefix sharing need every cache layer to be a plain ``DynamicLayer``; a model
whose cache has sliding-window layers decodes in static groups instead (a group is admitted when the
previous one has ended, its finished rows still leaving at once), each prompt prefilled whole.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from srscale.token_sampling import next_tokens, row_uniforms


@dataclass(frozen=True)
class Request:
    """One text to complete: its token ids (already cut to the input budget) and one seed per sample."""

    index: int
    prompt: list[int]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class Finished:
    """A finished completion: generated ids (the stop token included) and whether a stop token ended it."""

    index: int
    sample: int
    tokens: list[int]
    stopped: bool


@dataclass
class DecodeStats:
    """What the loop spent. A *slot* is one row of one forward that yields a token (prefill included):
    every slot yields a kept token, since a row leaves the batch in the step it ends."""

    forwards: int = 0
    prefill_positions: int = 0  # prompt positions fed, padding included
    prompt_tokens: int = 0  # prompt positions that were real tokens
    slots: int = 0

    @property
    def prefill_padding(self) -> float:
        return 1 - self.prompt_tokens / self.prefill_positions if self.prefill_positions else 0.0


@dataclass(frozen=True)
class Decoding:
    """How to decode: budget, sampling (``temperature == 0``: greedy), stop ids, batch width."""

    max_new_tokens: int
    temperature: float
    top_p: float
    stop_ids: frozenset[int]
    pad_id: int
    max_rows: int
    refill: int | None  # admit a new group once this many slots are free; None: static groups

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_rows < 1 or (self.refill is not None and self.refill < 1):
            raise ValueError(f"invalid decoding settings: {self}")


@dataclass
class _Row:
    index: int
    sample: int
    tokens: list[int] = field(default_factory=list)


@dataclass
class _Batch:
    """Live rows, right-aligned: column ``c`` of row ``r`` holds a real token where ``mask[r, c]``."""

    cache: object  # DynamicCache
    mask: torch.Tensor  # [rows, columns] long
    last: torch.Tensor  # [rows] the token to feed next (sampled, not yet in the cache)
    pos: torch.Tensor  # [rows] position of that token (real tokens before it)
    uniforms: torch.Tensor | None  # [rows, max_new_tokens] float64; None for greedy
    rows: list[_Row]


# A common prompt prefix shorter than this is prefilled with each row (sharing it costs a forward).
MIN_SHARED_PREFIX = 16


def shared_prefix_length(prompts: list[tuple[int, ...]] | list[list[int]]) -> int:
    """Tokens all ``prompts`` begin with, at most one less than the shortest (every row keeps at least
    one token of its own to prefill, whose logits give its first new token)."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    k = 0
    while k < n and all(p[k] == first[k] for p in prompts):
        k += 1
    return k


# ------------------------------------------------------------------------------ cache operations
def joinable(cache) -> bool:
    """True when every layer is a plain ``DynamicLayer`` (tensors [rows, heads, columns, dim])."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad_kv(t: torch.Tensor, columns: int) -> torch.Tensor:
    missing = columns - t.shape[-2]
    if missing == 0:
        return t
    return torch.cat([t.new_zeros((*t.shape[:-2], missing, t.shape[-1])), t], dim=-2)


def _left_pad_mask(mask: torch.Tensor, columns: int) -> torch.Tensor:
    missing = columns - mask.shape[1]
    return mask if missing == 0 else torch.cat([mask.new_zeros((mask.shape[0], missing)), mask], dim=1)


def join(a: _Batch, b: _Batch) -> _Batch:
    """``a``'s rows then ``b``'s, right-aligned on the longer of the two (plain caches only)."""
    columns = max(a.mask.shape[1], b.mask.shape[1])
    for la, lb in zip(a.cache.layers, b.cache.layers, strict=True):
        la.keys = torch.cat([_left_pad_kv(la.keys, columns), _left_pad_kv(lb.keys, columns)], dim=0)
        la.values = torch.cat([_left_pad_kv(la.values, columns), _left_pad_kv(lb.values, columns)], dim=0)
    return _Batch(a.cache, torch.cat([_left_pad_mask(a.mask, columns), _left_pad_mask(b.mask, columns)]),
                  torch.cat([a.last, b.last]), torch.cat([a.pos, b.pos]),
                  None if a.uniforms is None else torch.cat([a.uniforms, b.uniforms]), a.rows + b.rows)


def select(batch: _Batch, keep: list[int], trim: bool) -> _Batch:
    """The batch reduced to rows ``keep``; with ``trim``, leading columns no kept row uses are cut."""
    idx = torch.tensor(keep, device=batch.mask.device)
    batch.cache.batch_select_indices(idx)
    mask = batch.mask[idx]
    if trim:
        first = int(mask.any(dim=0).to(torch.int8).argmax())
        if first:
            mask = mask[:, first:]
            for layer in batch.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
    return _Batch(batch.cache, mask, batch.last[idx], batch.pos[idx],
                  None if batch.uniforms is None else batch.uniforms[idx], [batch.rows[k] for k in keep])


# ------------------------------------------------------------------------------------ the loop
class Decoder:
    """The decode loop over one model (its forward's arguments checked once)."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._new_cache = lambda: DynamicCache(config=base.config)
        self.joinable = joinable(self._new_cache())
        self.device = next(model.parameters()).device

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        kwargs = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()

    def _prefill(self, group: list[Request], d: Decoding, stats: DecodeStats) -> tuple[_Batch, torch.Tensor]:
        """Prefill ``group``'s distinct prompts once each; returns a batch with one row per sample (rows
        of one prompt share its prefill, also across texts with the same prompt) and their logits.

        A prefix common to all the distinct prompts (a judge rubric, a system prompt) of at least
        ``MIN_SHARED_PREFIX`` tokens is prefilled once and copied; each row then prefills its own rest,
        left-padded after the shared part (padding in the middle is masked like any other)."""
        distinct: dict[tuple[int, ...], int] = {}
        for r in group:
            distinct.setdefault(tuple(r.prompt), len(distinct))
        prompts = list(distinct)
        shared = shared_prefix_length(prompts) if self.joinable and len(prompts) > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            shared = 0
        cache = self._new_cache()
        past = torch.ones((len(prompts), shared), dtype=torch.long, device=self.device)
        if shared:
            head = torch.tensor([prompts[0][:shared]], device=self.device)
            self._forward(head, past[:1], torch.arange(shared, device=self.device)[None], cache)
            cache.batch_select_indices(torch.zeros(len(prompts), dtype=torch.long, device=self.device))
            stats.forwards += 1
            stats.prefill_positions += shared
            stats.prompt_tokens += shared
        rests = [p[shared:] for p in prompts]
        width = max(len(p) for p in rests)
        ids = torch.full((len(rests), width), d.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rests), width), dtype=torch.long)
        for k, p in enumerate(rests):
            ids[k, width - len(p):] = torch.tensor(p)
            mask[k, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (shared + mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        mask = torch.cat([past, mask], dim=1)
        logits = self._forward(ids, mask, positions, cache)
        stats.forwards += 1
        stats.prefill_positions += ids.numel()
        stats.prompt_tokens += sum(len(p) for p in rests)
        expand = [distinct[tuple(r.prompt)] for r in group for _ in r.seeds]
        idx = torch.tensor(expand, device=self.device)
        if expand != list(range(len(prompts))):
            cache.batch_select_indices(idx)
        rows = [_Row(r.index, j) for r in group for j in range(len(r.seeds))]
        uniforms = None
        if d.temperature > 0:
            uniforms = torch.stack([row_uniforms(s, d.max_new_tokens) for r in group for s in r.seeds])
            uniforms = uniforms.to(self.device)
        lengths = torch.tensor([len(prompts[k]) for k in expand], device=self.device)
        batch = _Batch(cache, mask[idx], torch.zeros(len(rows), dtype=torch.long, device=self.device),
                       lengths, uniforms, rows)
        return batch, logits[idx]

    def _advance(self, batch: _Batch, logits: torch.Tensor, d: Decoding, stats: DecodeStats,
                 joined: bool) -> tuple[_Batch | None, list[Finished]]:
        """Sample each row's next token, record it, and drop the rows that ended."""
        steps = [len(r.tokens) for r in batch.rows]
        u = None
        if batch.uniforms is not None:
            u = batch.uniforms[torch.arange(len(steps), device=self.device), torch.tensor(steps, device=self.device)]
        picked = next_tokens(logits, d.temperature, d.top_p, u)
        stats.slots += len(steps)
        done, keep = [], []
        for k, (row, token) in enumerate(zip(batch.rows, picked.tolist(), strict=True)):
            row.tokens.append(token)
            stopped = token in d.stop_ids
            if stopped or len(row.tokens) == d.max_new_tokens:
                done.append(Finished(row.index, row.sample, row.tokens, stopped))
            else:
                keep.append(k)
        batch.last = picked
        if not keep:
            return None, done
        if len(keep) < len(steps):
            batch = select(batch, keep, trim=joined)
        return batch, done

    @torch.no_grad()
    def run(self, requests: Iterable[Request], d: Decoding, on_finished: Callable[[Finished], bool],
            stats: DecodeStats | None = None) -> DecodeStats:
        """Decode every request, calling ``on_finished`` for each completion as it ends; returning
        True from it stops the loop at once (rows in flight are dropped)."""
        stats = stats if stats is not None else DecodeStats()
        queue: Iterator[Request] = iter(requests)
        waiting: Request | None = next(queue, None)
        batch: _Batch | None = None
        while True:
            live = 0 if batch is None else len(batch.rows)
            free = d.max_rows - live
            admit = waiting is not None and (
                live == 0 or (self.joinable and d.refill is not None and free >= d.refill))
            if admit:
                group, rows = [], 0
                while waiting is not None and (not group and live == 0 or rows + len(waiting.seeds) <= free):
                    group.append(waiting)
                    rows += len(waiting.seeds)
                    waiting = next(queue, None)
                if not group:  # the next text alone has more samples than the free slots: wait
                    admit = False
            if admit:
                new, logits = self._prefill(group, d, stats)
                new, finished = self._advance(new, logits, d, stats, joined=self.joinable)
                for f in finished:
                    if on_finished(f):
                        return stats
                if new is not None:
                    batch = new if batch is None else join(batch, new)
                continue
            if batch is None:
                return stats
            ones = batch.mask.new_ones((batch.mask.shape[0], 1))
            batch.mask = torch.cat([batch.mask, ones], dim=1)
            logits = self._forward(batch.last.unsqueeze(1), batch.mask, batch.pos.unsqueeze(1), batch.cache)
            stats.forwards += 1
            batch.pos = batch.pos + 1
            batch, finished = self._advance(batch, logits, d, stats, joined=self.joinable)
            for f in finished:
                if on_finished(f):
                    return stats
