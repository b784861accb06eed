"""SFT batch order: one kind per batch, every row once, shuffled, reproducible."""

import random

import pytest

from srscale.batching import GroupedBatchSampler, grouped_order


def _blocks(order, bs):
    return [order[k:k + bs] for k in range(0, len(order), bs)]


@pytest.mark.parametrize(("n_ift", "n_eft", "bs"), [(40, 60, 16), (7, 3, 4), (16, 16, 16), (5, 0, 2), (1, 1, 8)])
def test_every_row_once_and_full_batches_hold_one_kind(n_ift: int, n_eft: int, bs: int) -> None:
    groups = ["ift"] * n_ift + ["eft"] * n_eft
    random.Random(1).shuffle(groups)
    order = grouped_order(groups, bs, random.Random(0))
    assert sorted(order) == list(range(len(groups)))
    n_full = n_ift // bs + n_eft // bs
    for block in _blocks(order, bs)[:n_full]:
        assert len({groups[i] for i in block}) == 1


def test_order_mixes_within_a_kind_and_across_batches() -> None:
    groups = ["ift"] * 64 + ["eft"] * 64
    order = grouped_order(groups, 8, random.Random(0))
    firsts = [groups[b[0]] for b in _blocks(order, 8)]
    assert "ift" in firsts[:4] or "eft" in firsts[:4]
    assert firsts != sorted(firsts)  # the kinds' batches are interleaved, not one kind then the other
    ift_rows = [i for i in order if groups[i] == "ift"]
    assert ift_rows != sorted(ift_rows)  # rows are shuffled within their kind


def test_sampler_is_reproducible_and_changes_order_each_epoch() -> None:
    groups = ["a", "b"] * 20
    s1, s2 = GroupedBatchSampler(groups, 4, seed=3), GroupedBatchSampler(groups, 4, seed=3)
    e0, e1 = list(s1), list(s1)
    assert e0 == list(s2) and e1 == list(s2)
    assert e0 != e1
    s2.set_epoch(0)
    assert list(s2) == e0
    assert len(s1) == 40
    assert list(GroupedBatchSampler(groups, 4, seed=4)) != e0


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        grouped_order(["a"], 0, random.Random(0))
