"""The bundled verifiable suite: families (read, solve, grade, corrupt) and the seed-data builder."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from srscale.errors import SrscaleError
from srscale.judging import parse_score
from srscale.seed_data import SPLITS, SeedData
from srscale.suite import (
    DEFAULT_FAMILIES,
    FAMILIES,
    Task,
    build_suite,
    corrupt,
    grade,
    is_correct,
    pretrain_corpus,
    read_prompt,
    reference_answer,
)
from srscale.suite import text as tx

CONF = Path(__file__).resolve().parents[1] / "conf" / "judge"
TEMPLATES = {name: yaml.safe_load((CONF / f"{name}.yaml").read_text())["template"]
             for name in ("paper", "short", "tiny")}
SMALL = SimpleNamespace(ift=90, eft=120, seed_pairs=30, eft_eval=36, heldout=27, seed_prompts=27, probe=24)
EVAL_SPLITS = ("heldout", "probe", "eft_eval", "seed_prompts")


def _tasks(family: str, n: int, seed: int = 0) -> list[Task]:
    rng = random.Random(seed)
    return [FAMILIES[family].generate(rng) for _ in range(n)]


# ------------------------------------------------------------------------------------------ families
def test_at_least_six_families() -> None:
    assert len(FAMILIES) >= 6
    assert all(name == fam.name for name, fam in FAMILIES.items())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generated_prompts_read_back_to_their_family(family: str) -> None:
    fam = FAMILIES[family]
    rng = random.Random(7)
    templates = set()
    for _ in range(300):
        spec = fam.sample_spec(rng)
        prompt = fam.render(spec, rng)
        assert read_prompt(prompt) == (family, spec), prompt
        assert len(prompt) < 120
        skeleton = re.sub(r"\d+", "#", prompt)
        for part in spec:
            if isinstance(part, str) and len(part) >= 2:
                skeleton = re.sub(part, "W", skeleton, flags=re.I)
        templates.add(skeleton)
    assert len(templates) >= 3  # several phrasings per family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reference_answers_grade_five_and_are_short(family: str) -> None:
    for task in _tasks(family, 150):
        assert task.family == family
        assert reference_answer(task.prompt) == task.answer
        assert grade(task.prompt, task.answer) == 5
        assert is_correct(task.prompt, task.answer) is True
        assert len(task.answer.split()) <= 5


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_corrupted_responses_grade_exactly_their_level(family: str) -> None:
    rng = random.Random(3)
    seen: dict[int, set[str]] = {level: set() for level in range(6)}
    for task in _tasks(family, 60, seed=11):
        for level in range(6):
            response = corrupt(task, level, rng)
            assert grade(task.prompt, response) == level, (task.prompt, response)
            assert is_correct(task.prompt, response) is (level >= 4)
            seen[level].add(response)
    assert all(len(v) >= 2 for v in seen.values())  # not one canned response per level


def test_corrupt_rejects_a_level_off_the_scale() -> None:
    task = _tasks("arithmetic", 1)[0]
    with pytest.raises(ValueError):
        corrupt(task, 6, random.Random(0))


# Model-style rephrasings: (prompt, family, reference answer).
REPHRASINGS = [
    ("What is 3 + 4?", "arithmetic", "7"),
    ("Compute 3 plus 4.", "arithmetic", "7"),
    ("add 3 and 4", "arithmetic", "7"),
    ("  WHAT   IS 12*3 ??", "arithmetic", "36"),
    ("What's three plus four?", "arithmetic", "7"),
    ("Please subtract 5 from 20.", "arithmetic", "15"),
    ("Calculate the product of 6 and 7", "arithmetic", "42"),
    ("How much is 9 x 8", "arithmetic", "72"),
    ("Find the difference between 30 and 12.", "arithmetic", "18"),
    ("What number comes after 3, 6, 9?", "sequence", "12"),
    ("Give the next term in the series 10, 20, 30, 40", "sequence", "50"),
    ("Continue: 1, 3, 5, 7 ... what is next?", "sequence", "9"),
    ("What's the number after 41?", "successor", "42"),
    ("Which number comes right before 100?", "successor", "99"),
    ("What is one more than 9?", "successor", "10"),
    ("Is 12 even or odd?", "parity", "even"),
    ("Tell me whether 7 is an odd or an even number.", "parity", "odd"),
    ("odd or even? 250", "parity", "even"),
    ("What's the first word of apple, river, stone?", "pick", "apple"),
    ("Which comes last: cat, dog and moon?", "pick", "moon"),
    ("Tell me the last item in the list tiger, lamp, rose, kite", "pick", "kite"),
    ("Please sort these numbers: 5, 2, 9", "sort", "2, 5, 9"),
    ("Can you put 8 3 1 in order?", "sort", "1, 3, 8"),
    ("Sort 4, 10 and 7 from largest to smallest.", "sort", "10, 7, 4"),
    ("Arrange in descending order: 1, 5, 3", "sort", "5, 3, 1"),
    ("Which number is bigger, 14 or 9?", "extreme", "14"),
    ("What's the minimum of 8, 3, 12?", "extreme", "3"),
    ("Tell me the largest of these: 7, 70, 17.", "extreme", "70"),
    ("How many times does the letter 'p' appear in 'apple'?", "count", "2"),
    ("count the a's in banana", "count", "3"),
    ("How many r's are in the word carrot?", "count", "2"),
    ("In 'sheep', how many times does e occur?", "count", "2"),
    ("Number of s in glass?", "count", "2"),
    ("How many letters does the word elephant have?", "length", "8"),
    ("What is the length of the word tiger?", "length", "5"),
    ("how long is 'cat'", "length", "3"),
    ("Count all the letters in sunshine.", "length", "8"),
    ("Can you spell the word robot backwards?", "reverse", "tobor"),
    ("Reverse 'hello' please.", "reverse", "olleh"),
    ("What is DOG reversed?", "reverse", "god"),
    ("Write the word cat in all caps.", "case", "CAT"),
    ("Convert 'HOUSE' to lowercase, please.", "case", "house"),
    ("Change river to upper-case letters.", "case", "RIVER"),
    ("Capitalize every letter of moon.", "case", "MOON"),
    ("Please repeat 'hi' 3 times.", "repeat", "hi hi hi"),
    ("Say dog twice.", "repeat", "dog dog"),
    ("Write the word star four times, separated by spaces.", "repeat", "star star star star"),
]


@pytest.mark.parametrize(("prompt", "family", "answer"), REPHRASINGS)
def test_model_style_rephrasings_are_read(prompt: str, family: str, answer: str) -> None:
    found = read_prompt(prompt)
    assert found is not None and found[0] == family, found
    assert reference_answer(prompt) == answer
    assert grade(prompt, answer) == 5


def test_every_family_has_hand_written_rephrasings() -> None:
    assert {f for _, f, _ in REPHRASINGS} == set(FAMILIES)


@pytest.mark.parametrize("prompt", [
    "Tell me a story about a dragon.", "What is the capital of France?", "What is 3 + 4 + 5?",
    "Reverse the words cat and dog.", "", "   ", "Sort these numbers.", "Which is larger?",
    "Spell it backwards.", "1, 2, 4, 8 what comes next?",
])
def test_unreadable_prompts_give_none(prompt: str) -> None:
    assert read_prompt(prompt) is None
    assert grade(prompt, "7") is None
    assert is_correct(prompt, "7") is None


# (prompt, response, expected grade): hand-checked points of the scale.
GRADED = [
    ("What is 3 + 4?", "7", 5),
    ("What is 3 + 4?", " 7. ", 5),
    ("What is 3 + 4?", "seven", 5),
    ("What is 3 + 4?", "The answer is 7.", 4),
    ("What is 3 + 4?", "3 + 4 = 7", 4),
    ("What is 3 + 4?", "8, or maybe 7", 3),
    ("What is 3 + 4?", "7 7 7 7", 3),
    ("What is 3 + 4?", "Well, to add these we start from the first and count up until we reach 7 in total.", 3),
    ("What is 3 + 4?", "8", 2),
    ("What is 3 + 4?", "The answer is 12.", 2),
    ("What is 3 + 4?", "You want me to add them.", 1),
    ("What is 3 + 4?", "I like turtles.", 0),
    ("What is 3 + 4?", "", 0),
    ("What is 3 + 4?", None, 0),
    ("What is 3 + 4?", "!!!???", 0),
    ("Sort 5, 2, 9", "2, 5, 9", 5),
    ("Sort 5, 2, 9", "2 5 9", 5),
    ("Sort 5, 2, 9", "Sorted, 5, 2, 9 becomes 2, 5, 9.", 4),
    ("Sort 5, 2, 9", "9, 5, 2", 2),
    ("Sort 5, 2, 9", "2, 5", 2),
    ("What is the largest number in 5, 2, 9?", "The largest of 5, 2, 9 is 9.", 4),
    ("What is the largest number in 5, 2, 9?", "5", 2),
    ("Reverse the word 'cat'.", "tac", 5),
    ("Reverse the word 'cat'.", "cat backwards is tac.", 4),
    ("Reverse the word 'cat'.", "act", 2),
    ("Reverse the word 'cat'.", "The word reversed.", 1),
    ("Write 'apple' in uppercase.", "APPLE", 5),
    ("Write 'apple' in uppercase.", "apple in uppercase is APPLE", 4),
    ("Write 'apple' in uppercase.", "Apple", 2),
    ("Repeat the word 'cat' 3 times.", "cat cat cat", 5),
    ("Repeat the word 'cat' 3 times.", "cat, cat, cat", 5),
    ("Repeat the word 'cat' 3 times.", "cat cat cat cat", 2),
    ("Repeat the word 'cat' 3 times.", "cat cat", 2),
    ("How many letters are in 'banana'?", "banana has 6 letters.", 4),
    ("How many letters are in 'banana'?", "It is a long word, banana.", 1),
    ("How many times does the letter 'a' appear in 'banana'?", "three", 5),
    # successor: the prompt's number is an echo, never a competing answer
    ("What number comes after 37?", "38", 5),
    ("What number comes after 37?", "After 37 comes 38.", 4),
    ("What number comes after 37?", "36", 2),
    ("What is one less than 10?", "9", 5),
    # parity and pick: every answer is in the prompt, so naming several is hedging, not answering
    ("Is 37 odd or even?", "odd", 5),
    ("Is 37 odd or even?", "37 is odd.", 4),
    ("Is 37 odd or even?", "odd or even", 3),
    ("Is 37 odd or even?", "even", 2),
    ("Is 37 odd or even?", "This asks about parity.", 1),
    ("What is the first word in this list: apple, river, stone?", "apple", 5),
    ("What is the first word in this list: apple, river, stone?", "The first word is apple.", 4),
    ("What is the first word in this list: apple, river, stone?", "apple, river, stone", 3),
    ("What is the first word in this list: apple, river, stone?", "stone", 2),
    ("What is the last word in this list: apple, river, stone?", "stone", 5),
]


@pytest.mark.parametrize(("prompt", "response", "expected"), GRADED)
def test_grade_scale_examples(prompt: str, response: str | None, expected: int) -> None:
    assert grade(prompt, response) == expected


@pytest.mark.parametrize("response", [None, "", "  \n", 17, b"7", ["7"]])
def test_grader_handles_non_answers(response) -> None:
    assert grade("What is 3 + 4?", response) == 0
    assert is_correct("What is 3 + 4?", response) is False


def test_grader_handles_non_string_prompts() -> None:
    assert grade(None, "7") is None
    assert grade(42, "7") is None  # type: ignore[arg-type]


def test_word_pool_is_disjoint_from_instruction_vocabulary() -> None:
    words = set(tx.WORDS)
    assert len(words) >= 200
    assert not words & tx.STOP
    assert all(w.isalpha() and w.islower() and len(set(w)) >= 2 for w in words)
    topics = set().union(*(f.topic for f in FAMILIES.values()))
    unrelated = {t for s in tx.UNRELATED for t in tx.tokens(s) if len(t) >= 3}
    assert not unrelated & (words | topics | set(tx.NUMBER_WORDS))


# ------------------------------------------------------------------------------------------ builder
@pytest.fixture(scope="module")
def small() -> SeedData:
    return build_suite(SMALL, seed=5, judge_template=TEMPLATES["short"])


@pytest.fixture(scope="module")
def default_size() -> SeedData:
    sizes = SimpleNamespace(ift=1000, eft=1500, seed_pairs=200, eft_eval=200, heldout=100, seed_prompts=200,
                            probe=64)
    return build_suite(sizes, seed=1234, judge_template=TEMPLATES["paper"])


def test_split_sizes_match(small: SeedData) -> None:
    assert small.verifiable is True
    assert small.counts() == {name: getattr(SMALL, name) for name in SPLITS}


def test_build_accepts_a_config_object() -> None:
    from srscale.config import SuiteSizes

    data = build_suite(SuiteSizes(ift=9, eft=12, seed_pairs=3, eft_eval=3, heldout=3, seed_prompts=3, probe=6),
                       seed=0, judge_template=TEMPLATES["short"])
    assert data.counts()["eft"] == 12


def test_deterministic_under_a_seed(small: SeedData) -> None:
    again = build_suite(SMALL, seed=5, judge_template=TEMPLATES["short"])
    assert all(getattr(again, s) == getattr(small, s) for s in SPLITS)


def test_different_seeds_differ(small: SeedData) -> None:
    other = build_suite(SMALL, seed=6, judge_template=TEMPLATES["short"])
    for split in SPLITS:
        assert getattr(other, split) != getattr(small, split), split


def test_eval_splits_do_not_depend_on_training_sizes(small: SeedData) -> None:
    bigger = SimpleNamespace(**{**vars(SMALL), "ift": 200, "eft": 300, "seed_pairs": 50})
    data = build_suite(bigger, seed=5, judge_template=TEMPLATES["short"])
    for split in EVAL_SPLITS:
        assert getattr(data, split) == getattr(small, split)


def _task_prompt_of_eft(row: dict, template: str) -> tuple[str, str]:
    head, tail = template.split("{prompt}")
    mid, end = tail.split("{response}")
    text = row["prompt"]
    assert text.startswith(head) and text.endswith(end)
    body = text[len(head): len(text) - len(end)]
    prompt, response = body.split(mid)
    return prompt, response


def _split_prompts(data: SeedData, template: str) -> dict[str, set[str]]:
    return {
        "train": ({r["prompt"] for r in data.ift} | {r["prompt"] for r in data.seed_pairs}
                  | {_task_prompt_of_eft(r, template)[0] for r in data.eft}),
        **{s: {r["prompt"] for r in getattr(data, s)} for s in EVAL_SPLITS},
    }


def test_task_prompts_are_disjoint_across_splits(default_size: SeedData) -> None:
    prompts = _split_prompts(default_size, TEMPLATES["paper"])
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not prompts[a] & prompts[b], (a, b)
            # disjoint as tasks too, not only as strings
            assert not {read_prompt(p) for p in prompts[a]} & {read_prompt(p) for p in prompts[b]}, (a, b)
    assert len(prompts["heldout"]) == 100 and len(prompts["seed_prompts"]) == 200


def test_families_are_balanced_round_robin(default_size: SeedData) -> None:
    counts = Counter(r["family"] for r in default_size.heldout)
    assert set(counts) == set(DEFAULT_FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1
    ift_counts = Counter(read_prompt(r["prompt"])[0] for r in default_size.ift)
    assert max(ift_counts.values()) - min(ift_counts.values()) <= 1


def test_family_subset() -> None:
    data = build_suite(SMALL, seed=5, judge_template=TEMPLATES["short"], families=["reverse", "sort"])
    assert {read_prompt(r["prompt"])[0] for r in data.ift} == {"reverse", "sort"}
    assert {r["family"] for r in data.heldout} == {"reverse", "sort"}
    with pytest.raises(SrscaleError, match="unknown"):
        build_suite(SMALL, seed=5, judge_template=TEMPLATES["short"], families=["nope"])


def test_opt_in_families_build_a_suite_the_checkers_agree_with() -> None:
    assert set(DEFAULT_FAMILIES) < set(FAMILIES)
    data = build_suite(SMALL, seed=5, judge_template=TEMPLATES["short"], families=["pick", "successor", "parity"])
    assert {r["family"] for r in data.heldout} == {"pick", "successor", "parity"}
    for r in data.ift:
        assert grade(r["prompt"], r["response"]) >= 4, r
    for r in data.eft_eval:
        assert sorted(grade(r["prompt"], resp) for resp in r["responses"]) == sorted(map(int, r["gold"]))


def test_template_without_slots_is_refused() -> None:
    with pytest.raises(SrscaleError, match="slots"):
        build_suite(SMALL, seed=5, judge_template="Rate this: {prompt}")


def test_running_out_of_tasks_is_a_clear_error() -> None:
    too_many = SimpleNamespace(**{**vars(SMALL), "heldout": 5000})
    with pytest.raises(SrscaleError, match="ran out"):
        build_suite(too_many, seed=5, judge_template=TEMPLATES["short"], families=["length"])


def test_ift_responses_are_reference_answers_bare_or_in_a_sentence(small: SeedData) -> None:
    forms = Counter()
    for row in small.ift:
        ref = reference_answer(row["prompt"])
        if row["response"] == ref:
            forms["bare"] += 1
            assert grade(row["prompt"], row["response"]) == 5
        else:
            assert row["response"] == f"The answer is {ref}.", row
            forms["sentence"] += 1
            assert grade(row["prompt"], row["response"]) == 4
        assert is_correct(row["prompt"], row["response"])
    assert abs(forms["bare"] - forms["sentence"]) <= 1, forms


@pytest.mark.parametrize("template_name", ["short", "paper", "tiny"])
def test_eft_rows_agree_with_the_checker(template_name: str) -> None:
    template = TEMPLATES[template_name]
    data = build_suite(SMALL, seed=9, judge_template=template)
    for row in data.eft:
        prompt, response = _task_prompt_of_eft(row, template)
        assert read_prompt(prompt) is not None
        target = row["response"]
        assert re.search(r"Score: [0-5]$", target)
        assert target.endswith(f"Score: {row['score']}")
        assert grade(prompt, response) == row["score"]
        assert parse_score(target) == row["score"]  # the project's own parser reads the target
        assert len(target[: target.rindex("Score:")].split()) <= 20
        assert target.count("Score:") == 1
        # the evidence comes first: the correct answer, restated
        assert target.startswith(f"The correct answer is {reference_answer(prompt)}. "), target


def test_judgments_fit_twenty_words_for_the_longest_answers() -> None:
    from srscale.suite.build import JUDGMENTS, judgment

    longest = "10, 20, 30, 40, 50"  # a sorted list of five numbers; repeat answers are at most four words
    for score in JUDGMENTS:
        text = judgment(longest, score)
        assert len(text[: text.rindex("Score:")].split()) <= 20, text
        assert parse_score(text) == score
    assert len(set(JUDGMENTS.values())) == len(JUDGMENTS)  # each grade is described differently


def test_eft_scores_are_balanced(default_size: SeedData) -> None:
    counts = Counter(r["score"] for r in default_size.eft)
    assert set(counts) == set(range(6))
    assert max(counts.values()) - min(counts.values()) <= 1
    # several distinct responses per task prompt, of distinct grades
    by_prompt: dict[str, list[int]] = {}
    for row in default_size.eft:
        by_prompt.setdefault(_task_prompt_of_eft(row, TEMPLATES["paper"])[0], []).append(row["score"])
    assert all(len(set(v)) == len(v) for v in by_prompt.values())
    assert Counter(len(v) for v in by_prompt.values()).most_common(1)[0][0] == 3


def test_seed_pairs_are_graded_good_over_bad(small: SeedData) -> None:
    for row in small.seed_pairs:
        assert grade(row["prompt"], row["chosen"]) == 5
        assert grade(row["prompt"], row["rejected"]) <= 2


def test_eft_eval_has_four_distinct_gold_grades(small: SeedData) -> None:
    for row in small.eft_eval:
        assert len(row["responses"]) == 4 and len(set(row["gold"])) == 4
        assert all(isinstance(g, float) for g in row["gold"])
        assert [float(grade(row["prompt"], r)) for r in row["responses"]] == row["gold"]


def test_probe_rows_are_task_prompts_with_gold(default_size: SeedData) -> None:
    golds = Counter()
    for row in default_size.probe:
        assert "{prompt}" not in row["prompt"] and "Review the user" not in row["prompt"]
        assert read_prompt(row["prompt"]) is not None
        assert float(grade(row["prompt"], row["response"])) == row["gold"]
        golds[row["gold"]] += 1
    assert set(golds) == {float(g) for g in range(6)}
    assert max(golds.values()) - min(golds.values()) <= 1


def test_heldout_rows_name_their_family(small: SeedData) -> None:
    for row in small.heldout:
        assert read_prompt(row["prompt"])[0] == row["family"]


def test_saves_and_loads(tmp_path: Path, small: SeedData) -> None:
    small.save(tmp_path)
    assert SeedData.load(tmp_path) == small


# ------------------------------------------------------------------------------------ pretraining text
def test_pretrain_corpus_has_no_judge_text() -> None:
    corpus = pretrain_corpus(2000, seed=1)
    assert len(corpus) == 2000
    joined = "\n".join(corpus)
    assert "score" not in joined.lower()
    assert "Review the user" not in joined and "point" not in joined.lower()
    assert pretrain_corpus(2000, seed=1) == corpus
    assert pretrain_corpus(2000, seed=2) != corpus


def test_pretrain_corpus_answers_are_correct() -> None:
    qa = [re.fullmatch(r"(?:Question|Q): (.*)\n(?:Answer|A): (.*)", t) for t in pretrain_corpus(1000, seed=3)]
    qa = [m for m in qa if m]
    assert len(qa) > 200
    for m in qa:
        assert grade(m.group(1), m.group(2)) == 5


def test_pretrain_corpus_excludes_held_out_tasks(small: SeedData) -> None:
    held = [r["prompt"] for r in small.heldout]
    corpus = pretrain_corpus(3000, seed=4, exclude=held)
    firsts = [t.split("\n")[0].removeprefix("Question: ").removeprefix("Q: ") for t in corpus if "\n" in t]
    assert len(firsts) > 1000
    assert not {read_prompt(p) for p in firsts} & {read_prompt(p) for p in held}
    included = pretrain_corpus(12000, seed=4)
    firsts = [t.split("\n")[0].removeprefix("Question: ").removeprefix("Q: ") for t in included if "\n" in t]
    assert {read_prompt(p) for p in firsts} & {read_prompt(p) for p in held}  # the exclusion did something
