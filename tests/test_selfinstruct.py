"""Self-instruct prompt generation: few-shot text, extraction, shot sampling and the ROUGE-L filter."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from srscale.selfinstruct import (
    PromptFilter,
    build_fewshot_prompt,
    extract_instruction,
    normalize_prompt,
    sample_shots,
)

POOL = [
    "Write a short poem about the ocean at night.",
    "Explain how photosynthesis works to a ten-year-old.",
    "List three advantages of electric cars over petrol cars.",
    "Translate the sentence 'good morning' into French.",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "Give me a recipe for a simple tomato soup.",
]


def test_fewshot_prompt_layout():
    text = build_fewshot_prompt(["Seed one.", "Seed\n two."], ["Generated one."])
    assert text == "Task 1: Seed one.\nTask 2: Seed two.\nTask 3: Generated one.\nTask 4:"


def test_fewshot_prompt_paper_shape():
    text = build_fewshot_prompt(POOL, ["New A.", "New B."])
    assert text.count("\nTask ") == 8
    assert text.endswith("Task 9:")


def test_fewshot_prompt_needs_examples():
    with pytest.raises(ValueError):
        build_fewshot_prompt([], [" "])


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        (" Describe a rainy day in Paris.\nTask 10: Something else", "Describe a rainy day in Paris."),
        (" Describe a rainy day. Task 10: more", "Describe a rainy day."),
        ("Task 9: Name two rivers in Africa.\n", "Name two rivers in Africa."),
        ("  Write a haiku about snow.  ", "Write a haiku about snow."),
        ("\n\nWrite a limerick.", None),  # the first line is empty: nothing was generated for this task
        ("", None),
        (None, None),
        (" \nTask 10: x", None),
    ],
)
def test_extract_instruction(generated, expected):
    assert extract_instruction(generated) == expected


def test_extract_roundtrip_with_fewshot_prompt():
    prompt = build_fewshot_prompt(POOL[:2], [])
    continuation = " Plan a three-day trip to Rome.\nTask 4: Write a song."
    assert prompt.endswith("Task 3:")
    assert extract_instruction(continuation) == "Plan a three-day trip to Rome."


def test_sample_shots_paper_split_and_determinism():
    pool = [f"seed {i}" for i in range(20)]
    generated = [f"gen {i}" for i in range(5)]
    seeds, gens = sample_shots(pool, generated, rng=3)
    assert len(seeds) == 6 and len(gens) == 2
    assert set(seeds) <= set(pool) and set(gens) <= set(generated)
    assert len(set(seeds)) == 6 and len(set(gens)) == 2
    assert sample_shots(pool, generated, rng=random.Random(3)) == (seeds, gens)


def test_sample_shots_fills_missing_generated_with_seeds():
    pool = [f"seed {i}" for i in range(20)]
    seeds, gens = sample_shots(pool, [], rng=0)
    assert gens == [] and len(seeds) == 8
    seeds, gens = sample_shots(pool, ["only one"], rng=0)
    assert gens == ["only one"] and len(seeds) == 7


def test_sample_shots_small_pool():
    seeds, gens = sample_shots(["a", "b"], [], n_seed=6, n_generated=2, rng=0)
    assert sorted(seeds) == ["a", "b"] and gens == []


def test_filter_rejects_near_duplicates_and_keeps_novel():
    f = PromptFilter(POOL, threshold=0.7, min_chars=8, max_chars=200)
    assert f.consider("Write a short poem about the ocean in the night.") == (False, "rouge")
    assert f.consider("Describe the rules of chess for a beginner.") == (True, "kept")
    # a kept prompt joins the comparison pool
    assert f.consider("Describe the rules of chess for beginners.") == (False, "rouge")
    assert f.kept == ["Describe the rules of chess for a beginner."]


def test_filter_threshold_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    cand = "Explain how photosynthesis works to a child."
    exact = max(scorer.score(p, cand)["rougeL"].fmeasure for p in POOL)
    f = PromptFilter(POOL)
    best, match = f.max_rouge(cand)
    assert best == pytest.approx(exact)
    assert match == POOL[1]
    # just above and just below the measured similarity
    assert PromptFilter(POOL, threshold=exact - 1e-6).consider(cand) == (False, "rouge")
    assert PromptFilter(POOL, threshold=exact + 1e-6).consider(cand) == (True, "kept")


def test_filter_length_bounds_and_duplicates():
    f = PromptFilter(POOL, min_chars=10, max_chars=60)
    assert f.consider("Hi there") == (False, "too_short")
    assert f.consider("   Short?   ") == (False, "too_short")  # measured after stripping
    assert f.consider(None) == (False, "too_short")
    assert f.consider("x" * 61) == (False, "too_long")
    assert f.consider("WRITE a short poem about the ocean at night!!") == (False, "duplicate")
    assert f.consider("What are the causes of inflation?") == (True, "kept")
    assert f.consider("what are the causes of inflation") == (False, "duplicate")
    assert f.counts == {"too_short": 3, "too_long": 1, "duplicate": 2, "rouge": 0, "kept": 1}


def test_filter_counts_start_at_zero_and_validates():
    assert PromptFilter([]).counts == {"too_short": 0, "too_long": 0, "duplicate": 0, "rouge": 0, "kept": 0}
    with pytest.raises(ValueError):
        PromptFilter([], threshold=0)
    with pytest.raises(ValueError):
        PromptFilter([], min_chars=10, max_chars=5)


def test_filter_with_empty_pool_keeps_first_and_filters_repeat():
    f = PromptFilter([])
    assert f.consider("Name the planets of the solar system.")[0]
    assert f.consider("Name all the planets of the solar system.") == (False, "rouge")


def test_normalize_prompt():
    assert normalize_prompt("  Hello,   WORLD! ") == "hello world"
    assert normalize_prompt("Ünïcode téxt") == "ünïcode téxt"
    assert normalize_prompt("写一首诗") != normalize_prompt("解释光合作用")
