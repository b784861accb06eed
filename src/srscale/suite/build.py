"""Build the bundled suite's seed data (all seven splits) and the base model's pretraining corpus.

Task prompts are drawn round-robin over the families, each split from its own seeded stream, into one
shared set of used tasks: no task (family and spec, hence no prompt) appears in two of heldout, probe,
eft_eval, seed_prompts and the train pool. The train pool feeds ``ift``, ``eft`` and ``seed_pairs``.
Splits are drawn in the order heldout, probe, eft_eval, seed_prompts, train, so the evaluation splits of
a seed do not change when only the training sizes change.

Rows (see :mod:`srscale.seed_data` for the contracts):

- ``ift``: the reference answer to each train task, alternately bare (grade 5) and as a short sentence,
  "The answer is 42." (grade 4).
- ``eft``: the judge template filled with a train task and a response of known grade (each train task
  gets up to three responses of distinct grades; grades 0-5 are balanced over the split); the target is
  a short justification (at most 20 words) that restates the correct answer, says what the response
  does, and ends in ``Score: n`` with n the checker's grade.
- ``seed_pairs``: chosen = the reference answer (grade 5), rejected = a response of grade 0, 1 or 2.
- ``eft_eval``: four responses of distinct grades per prompt, gold = their grades as floats.
- ``heldout``: prompt and family; ``seed_prompts``: prompt; ``probe``: task prompt, a response of
  known grade (balanced) and its gold grade.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from srscale.errors import SrscaleError
from srscale.judging import build_judge_prompt
from srscale.seed_data import SeedData
from srscale.suite.families import (
    DEFAULT_FAMILIES,
    FAMILIES,
    SCALE,
    Family,
    Task,
    corrupt,
    grade,
    read_prompt,
)

EFT_PER_TASK = 3  # judge examples (of distinct grades) made from one train task
EVAL_RESPONSES = 4  # responses per eft_eval prompt
_MAX_TRIES = 200  # fresh samples before a family counts as exhausted
_SIZE_NAMES = ("ift", "eft", "seed_pairs", "eft_eval", "heldout", "seed_prompts", "probe")

# What a response of each grade looks like, said after restating the correct answer: the judgment
# carries its evidence (the answer a judge must know) before the score, so a model can learn to
# compare the response with the answer instead of guessing the score from the response's surface.
JUDGMENTS: dict[int, str] = {
    5: "The response is exactly this answer.",
    4: "The response gives this answer with a few extra words.",
    3: "It has this answer, but long, repeated or hedged.",
    2: "The response gives a wrong answer.",
    1: "The response mentions the task but gives no answer.",
    0: "The response is empty or unrelated to the question.",
}
# The forms of the IFT reference answers: the bare answer (grade 5) and a short sentence (grade 4),
# so that a model's candidates are answers of more than one token and differ in a way the checker
# (and a judge that learned it) can rank.
IFT_FORMS = ("{a}", "The answer is {a}.")


def fill_template(template: str, prompt: str, response: str) -> str:
    """Put ``prompt`` and ``response`` into the template's slots (the judge's own filler, never str.format)."""
    return build_judge_prompt(template, prompt, response)


def judgment(answer: str, score: int) -> str:
    """The target judgment of a response of grade ``score`` to a task whose answer is ``answer``.

    At most 20 words before ``Score: n`` for every answer the suite makes (the longest, a sorted list
    of five numbers, takes 5 of them).
    """
    return f"The correct answer is {answer}. {JUDGMENTS[score]} Score: {score}"


def ift_response(task: Task, i: int) -> str:
    """The ``i``-th train task's reference answer in form ``IFT_FORMS[i % 2]`` (grade 5 bare, grade 4 as
    a sentence; a sentence the checker would not grade 4 falls back to the bare answer)."""
    text = IFT_FORMS[i % len(IFT_FORMS)].format(a=task.answer)
    return text if i % len(IFT_FORMS) == 0 or grade(task.prompt, text) == 4 else task.answer


def _resolve_families(families: Iterable[str] | None) -> list[Family]:
    if families is None:
        return [FAMILIES[n] for n in DEFAULT_FAMILIES]
    names = list(dict.fromkeys(families))
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise SrscaleError(f"data.families: unknown or empty {unknown or names}; choose from {sorted(FAMILIES)}")
    return [FAMILIES[n] for n in names]


def _size(sizes, name: str) -> int:
    value = sizes[name] if isinstance(sizes, dict) else getattr(sizes, name)
    if not isinstance(value, int) or value < 0:
        raise SrscaleError(f"data.sizes.{name} must be a non-negative integer, got {value!r}")
    return value


def _rng(seed: int, stream: str) -> random.Random:
    return random.Random(f"srscale-suite:{seed}:{stream}")


def draw_tasks(fams: list[Family], n: int, rng: random.Random, used: set) -> list[Task]:
    """``n`` tasks round-robin over ``fams`` whose (family, spec) is not in ``used`` (which is updated).

    A family whose space of tasks runs out is skipped from then on; running out altogether is an error.
    """
    tasks: list[Task] = []
    exhausted: set[str] = set()
    i = 0
    while len(tasks) < n:
        live = [f for f in fams if f.name not in exhausted]
        if not live:
            raise SrscaleError(f"the suite ran out of distinct tasks after {len(tasks)} of {n}: "
                               "lower data.sizes or add families")
        fam = live[i % len(live)]
        i += 1
        for _ in range(_MAX_TRIES):
            spec = fam.sample_spec(rng)
            if (fam.name, spec) not in used:
                used.add((fam.name, spec))
                tasks.append(Task(fam.name, fam.render(spec, rng), fam.solve(spec)))
                break
        else:
            exhausted.add(fam.name)
    return tasks


def _balanced_levels(n: int, rng: random.Random, group: int = 1) -> list[int]:
    """``n`` grades, each of 0..5 as often as possible; consecutive ``group``-blocks hold distinct grades."""
    if len(SCALE) % group:
        raise ValueError(f"group must divide {len(SCALE)}, got {group}")
    levels: list[int] = []
    while len(levels) < n:
        perm = list(SCALE)
        rng.shuffle(perm)
        levels += perm
    return levels[:n]


def build_suite(sizes, seed: int, judge_template: str, families: list[str] | None = None) -> SeedData:
    """Generate every split of the verifiable suite (module docstring); deterministic in ``seed``."""
    if "{prompt}" not in judge_template or "{response}" not in judge_template:
        raise SrscaleError("judge.template must contain the {prompt} and {response} slots")
    fams = _resolve_families(families)
    n = {name: _size(sizes, name) for name in _SIZE_NAMES}
    used: set = set()
    heldout = draw_tasks(fams, n["heldout"], _rng(seed, "heldout"), used)
    probe = draw_tasks(fams, n["probe"], _rng(seed, "probe"), used)
    eft_eval = draw_tasks(fams, n["eft_eval"], _rng(seed, "eft_eval"), used)
    seed_prompts = draw_tasks(fams, n["seed_prompts"], _rng(seed, "seed_prompts"), used)
    n_train = max(n["ift"], n["seed_pairs"], math.ceil(n["eft"] / EFT_PER_TASK))
    train = draw_tasks(fams, n_train, _rng(seed, "train"), used)

    data = SeedData(verifiable=True)
    data.ift = [{"prompt": t.prompt, "response": ift_response(t, i)} for i, t in enumerate(train[:n["ift"]])]

    rng = _rng(seed, "eft:responses")
    levels = _balanced_levels(n["eft"], rng, group=EFT_PER_TASK)
    for i, level in enumerate(levels):
        task = train[(i // EFT_PER_TASK) % len(train)]
        response = corrupt(task, level, rng)
        data.eft.append({"prompt": fill_template(judge_template, task.prompt, response),
                         "response": judgment(task.answer, level), "score": level})
    rng.shuffle(data.eft)

    rng = _rng(seed, "seed_pairs:responses")
    for i in range(n["seed_pairs"]):
        task = train[i % len(train)]
        data.seed_pairs.append({"prompt": task.prompt, "chosen": corrupt(task, 5, rng),
                                "rejected": corrupt(task, (0, 1, 2)[i % 3], rng)})

    rng = _rng(seed, "eft_eval:responses")
    for task in eft_eval:
        chosen = rng.sample(SCALE, EVAL_RESPONSES)
        data.eft_eval.append({"prompt": task.prompt, "responses": [corrupt(task, g, rng) for g in chosen],
                              "gold": [float(g) for g in chosen]})

    data.heldout = [{"prompt": t.prompt, "family": t.family} for t in heldout]
    data.seed_prompts = [{"prompt": t.prompt} for t in seed_prompts]

    rng = _rng(seed, "probe:responses")
    for task, level in zip(probe, _balanced_levels(len(probe), rng), strict=True):
        data.probe.append({"prompt": task.prompt, "response": corrupt(task, level, rng), "gold": float(level)})
    return data


# ------------------------------------------------------------------------------------ pretraining text
_QA_FORMATS = ("Question: {p}\nAnswer: {a}", "Q: {p}\nA: {a}", "{p}\n{a}", "{p} The answer is {a}.")
_SUBJECTS = ("The cat", "A little dog", "My friend", "The old farmer", "A young girl", "The teacher",
             "Our neighbor", "The baker", "A small bird", "The little boy", "The pilot", "A tired sailor")
_VERBS = ("walks to", "looks at", "runs past", "sings near", "waits by", "smiles at", "reads beside",
          "plays near", "sits under", "paints", "dreams of", "visits")
_OBJECTS = ("the river", "a tall tree", "the market", "the red door", "a quiet lake", "the old bridge",
            "the garden", "a busy street", "the yellow house", "the library", "the harbor", "a green hill")
_TAILS = ("", " every morning", " in the rain", " after lunch", " before sunset", " with a smile",
          " on weekends", " in the summer")


def _sentence(rng: random.Random) -> str:
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."


def pretrain_corpus(n: int, seed: int, exclude: Iterable[str] = (), families: list[str] | None = None,
                    qa_fraction: float = 0.7) -> list[str]:
    """``n`` short texts for causal-LM pretraining: task questions with correct answers, and plain sentences.

    No judge-format text (no rubric, no "Score:"), so a base model trained on it cannot judge.
    Tasks read from the ``exclude`` prompts (e.g. held-out and evaluation prompts) never appear.
    """
    fams = _resolve_families(families)
    banned = {found for p in exclude if (found := read_prompt(p)) is not None}
    rng = random.Random(f"srscale-pretrain:{seed}")
    out: list[str] = []
    k = 0
    while len(out) < n:
        if rng.random() < qa_fraction:
            fam = fams[k % len(fams)]
            k += 1
            spec = fam.sample_spec(rng)
            if (fam.name, spec) in banned:
                continue
            out.append(rng.choice(_QA_FORMATS).format(p=fam.render(spec, rng), a=fam.solve(spec)))
        else:
            out.append(" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))))
    return out
