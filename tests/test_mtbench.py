"""MT-Bench in FastChat's formats: real questions, judge prompts and references from ../shared/data,
a real chat-completions server on 127.0.0.1 as the judge, a fake model callable; the summary checked by
hand and against FastChat's own ``show_result.py``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from srscale import mtbench as cli
from srscale.config import MTBenchConfig
from srscale.errors import SrscaleError
from srscale.evaluation import mtbench as mt
from srscale.evaluation.judges import make_judge
from test_judges import ChatServer

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mt_files(shared_data):
    root = shared_data / "mt_bench"
    return {
        "questions": root / "question.jsonl",
        "references": root / "reference_answer" / "gpt-4.jsonl",
        "judge_prompts": root / "judge_prompts.jsonl",
    }


@pytest.fixture(scope="module")
def all_questions(mt_files):
    return mt.load_questions(mt_files["questions"])


QIDS = (81, 92, 103, 114, 125)  # writing, roleplay, reasoning, math, coding


@pytest.fixture(scope="module")
def questions(all_questions):
    return [q for q in all_questions if q["question_id"] in QIDS]


class FakeChat:
    """The model callable: answers ``ANSWER q<id> t<turn>``; records every batch."""

    def __init__(self, questions):
        self.qid_of = {q["turns"][0]: q["question_id"] for q in questions}
        self.calls: list[list[list[dict]]] = []

    def __call__(self, conversations, max_new_tokens):
        self.calls.append(conversations)
        out = []
        for conv in conversations:
            qid = self.qid_of[conv[0]["content"]]
            turn = sum(m["role"] == "user" for m in conv)
            out.append(f"  ANSWER q{qid} t{turn}  ")
        return out


# What the judge server says about each (question, turn); expected scores beside.
JUDGMENTS = {
    (81, 1): ("The answer is weak. Rating: [[2]]", 2),
    (81, 2): ("Excellent. Rating: [[9]]", 9),
    (92, 1): ("Fine. Rating: [3]", 3),  # FastChat's backup pattern
    (92, 2): ("Rating: [[8]]", 8),
    (103, 1): ("Rating: [[4]]", 4),
    (103, 2): ("I refuse to rate this.", None),  # no rating: -1 in the file, missing in the means
    (114, 1): ("Rating: [[5]]", 5),
    (114, 2): ("Rating: [[6.0]]", 6.0),
    (125, 1): ("Rating: [[15]]", None),  # off the 1-10 scale: missing
    (125, 2): ("Rating: [[5]]", 5),
}
ANSWER_RE = re.compile(r"ANSWER q(\d+) t(\d)")


def judge_responder(body):
    found = ANSWER_RE.findall(body["messages"][-1]["content"])
    qid, turn = found[-1]  # the turn being judged is the last answer shown
    return JUDGMENTS[(int(qid), int(turn))][0]


def expected_means():
    t1 = [s for (q, t), (_, s) in JUDGMENTS.items() if t == 1 and s is not None]
    t2 = [s for (q, t), (_, s) in JUDGMENTS.items() if t == 2 and s is not None]
    return sum(t1) / len(t1), sum(t2) / len(t2), sum(t1 + t2) / len(t1 + t2)


# ------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    "text, rating",
    [
        ("Rating: [[7]]", 7),
        ("Rating: [[7.5]]", 7.5),
        ("Rating: [[10]]", 10),  # not read as 1
        ("[[3]] first, then [[9]]", 3),  # FastChat: first match
        ("Rating: [8]", 8),  # backup pattern
        ("see [2] and Rating: [[6]]", 6),  # double brackets win over the backup
        ("Rating: 7", None),
        ("Rating: [[seven]]", None),
        ("Rating: [[0]]", None),
        ("Rating: [[11]]", None),
        ("", None),
    ],
)
def test_parse_rating(text, rating):
    got = mt.parse_rating(text)
    assert got == rating and type(got) is type(rating)


def test_parse_rating_without_scale_keeps_fastchat_values():
    assert mt.parse_rating("[[15]]", scale=None) == 15


def test_is_failed():
    assert mt.is_failed(-1) and mt.is_failed(-1.0) and mt.is_failed(None) and mt.is_failed(float("nan"))
    assert not mt.is_failed(1) and not mt.is_failed(7.5)


# ------------------------------------------------------------------------------------ loading
def test_load_real_files(mt_files, all_questions):
    assert len(all_questions) == 80
    prompts = mt.load_judge_prompts(mt_files["judge_prompts"])
    assert set(mt.SINGLE_PROMPTS.values()) | {"pair-v2"} <= set(prompts)
    refs = mt.load_references(mt_files["references"])
    needs = [q["question_id"] for q in all_questions if q["category"] in mt.NEED_REF_CATS]
    assert set(needs) <= set(refs)
    inline = mt.references_from_questions(all_questions)
    assert 123 not in inline and 111 in inline  # the question file's own references are partial
    assert {q["question_id"]: q["category"] for q in all_questions} == mt.MTBENCH_CATEGORIES


def test_select_questions_covers_categories(all_questions):
    chosen = mt.select_questions(all_questions, 8)
    assert len({q["category"] for q in chosen}) == 8
    assert [q["question_id"] for q in chosen] == sorted(q["question_id"] for q in chosen)
    assert len(mt.select_questions(all_questions, 20)) == 20
    assert mt.select_questions(all_questions, None) == all_questions


def test_load_inputs_from_config(mt_files):
    cfg = MTBenchConfig(
        question_file=str(mt_files["questions"]),
        reference_file=str(mt_files["references"]),
        judge_prompts_file=str(mt_files["judge_prompts"]),
        max_questions=16,
    )
    questions, refs, prompts = mt.load_inputs(cfg)
    assert len(questions) == 16 and "single-v1" in prompts
    assert all(q["question_id"] in refs for q in questions if q["category"] in mt.NEED_REF_CATS)


def test_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(SrscaleError, match="file not found"):
        mt.load_questions(tmp_path / "nope.jsonl")
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["x"]}\n')
    with pytest.raises(SrscaleError, match="not a FastChat question file"):
        mt.load_questions(bad)


def test_hub_questions_offline_tell_the_user_what_to_pass(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SrscaleError) as err:
        mt.questions_from_hub()
    msg = str(err.value)
    assert "eval.mtbench.question_file=" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------ answers
def test_generate_answers_two_turns_batched(questions):
    chat = FakeChat(questions)
    answers = mt.generate_answers(chat, questions, "m-sft", max_new_tokens=16)
    assert len(chat.calls) == 2  # one batch per turn
    assert all(len(batch) == len(questions) for batch in chat.calls)
    q0 = questions[0]
    assert chat.calls[1][0] == [
        {"role": "user", "content": q0["turns"][0]},
        {"role": "assistant", "content": f"ANSWER q{q0['question_id']} t1"},
        {"role": "user", "content": q0["turns"][1]},
    ]
    rec = answers[0]
    assert set(rec) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert rec["model_id"] == "m-sft" and rec["question_id"] == q0["question_id"]
    assert rec["choices"] == [
        {"index": 0, "turns": [f"ANSWER q{q0['question_id']} t1", f"ANSWER q{q0['question_id']} t2"]}
    ]
    assert len({a["answer_id"] for a in answers}) == len(answers)


# ------------------------------------------------------------------------------------ judging
def test_judge_answers_fastchat_single_mode(questions, mt_files):
    answers = mt.generate_answers(FakeChat(questions), questions, "m", 16)
    prompts = mt.load_judge_prompts(mt_files["judge_prompts"])
    refs = mt.load_references(mt_files["references"])
    with ChatServer(judge_responder) as server:
        judge = make_judge(MTBenchConfig(judge="endpoint", judge_model="judge-x", base_url=server.base_url))
        records = mt.judge_answers(judge, questions, answers, prompts, refs, max_tokens=64)
    assert len(server.requests) == 10 and len(records) == 10
    assert all(r["json"]["max_tokens"] == 64 and r["json"]["temperature"] == 0 for r in server.requests)

    by_key = {(r["question_id"], r["turn"]): r for r in records}
    for rec in records:
        assert set(rec) == {
            "question_id",
            "model",
            "judge",
            "user_prompt",
            "judgment",
            "score",
            "turn",
            "tstamp",
        }
        assert rec["model"] == "m"
        expected = JUDGMENTS[(rec["question_id"], rec["turn"])][1]
        assert rec["score"] == (mt.FAILED_SCORE if expected is None else expected)
    assert by_key[(81, 1)]["judge"] == ["judge-x", "single-v1"]
    assert by_key[(81, 2)]["judge"] == ["judge-x", "single-v1-multi-turn"]
    assert by_key[(114, 1)]["judge"] == ["judge-x", "single-math-v1"]
    assert by_key[(125, 2)]["judge"] == ["judge-x", "single-math-v1-multi-turn"]
    assert by_key[(103, 2)]["score"] == -1 and by_key[(125, 1)]["score"] == -1

    # the exact FastChat prompt text: template filled with question, answer and reference
    q114 = next(q for q in questions if q["question_id"] == 114)
    ref = refs[114]["choices"][0]["turns"]
    assert by_key[(114, 1)]["user_prompt"] == prompts["single-math-v1"]["prompt_template"].format(
        question=q114["turns"][0], answer="ANSWER q114 t1", ref_answer_1=ref[0], ref_answer_2=ref[1]
    )
    sent = [r["json"]["messages"] for r in server.requests]
    assert {m[0]["content"] for m in sent} >= {
        prompts["single-v1"]["system_prompt"],
        prompts["single-math-v1"]["system_prompt"],
    }
    q81 = next(q for q in questions if q["question_id"] == 81)
    assert by_key[(81, 2)]["user_prompt"] == prompts["single-v1-multi-turn"]["prompt_template"].format(
        question_1=q81["turns"][0],
        question_2=q81["turns"][1],
        answer_1="ANSWER q81 t1",
        answer_2="ANSWER q81 t2",
    )


def test_math_question_without_reference_is_an_error(questions, mt_files):
    answers = mt.generate_answers(FakeChat(questions), questions, "m", 16)
    prompts = mt.load_judge_prompts(mt_files["judge_prompts"])
    with pytest.raises(SrscaleError, match=r"question 103 \(reasoning\) needs a reference.*reference_file"):
        mt.judge_answers(lambda *a: None, questions, answers, prompts, references={})


def test_run_mtbench_writes_fastchat_files_and_excludes_failures(questions, mt_files, tmp_path):
    cfg = MTBenchConfig(
        enabled=True,
        question_file=str(mt_files["questions"]),
        reference_file=str(mt_files["references"]),
        judge_prompts_file=str(mt_files["judge_prompts"]),
        judge="endpoint",
        judge_model="judge-x",
        max_new_tokens=16,
        judge_max_tokens=64,
    )
    chat = FakeChat(questions)
    with ChatServer(judge_responder) as server:
        judge = make_judge(dataclasses.replace(cfg, base_url=server.base_url))
        metrics = mt.run_mtbench(chat, judge, cfg, tmp_path, "m1", questions=questions)
        n_requests = len(server.requests)
        # resume: everything is on disk, so nothing is generated or judged again
        again = mt.run_mtbench(chat, judge, cfg, tmp_path, "m1", questions=questions)
        assert len(server.requests) == n_requests == 10
    assert len(chat.calls) == 2
    assert again == metrics

    t1, t2, overall = expected_means()
    assert metrics["mtbench/turn1"] == pytest.approx(t1)  # 3.5: [[15]] on q125 left out, not averaged
    assert metrics["mtbench/turn2"] == pytest.approx(t2)  # 7.0: the refusal on q103 left out
    assert metrics["mtbench/score"] == pytest.approx(overall)  # 5.25
    assert metrics["mtbench/reasoning"] == 4 and metrics["mtbench/coding"] == 5
    assert metrics["mtbench/writing"] == pytest.approx(5.5)
    assert metrics["mtbench/missing"] == 2 and metrics["mtbench/scored"] == 8

    answer_file = tmp_path / "model_answer" / "m1.jsonl"
    judgment_file = tmp_path / "model_judgment" / "judge-x_single.jsonl"
    answers = [json.loads(x) for x in answer_file.read_text().splitlines()]
    judgments = [json.loads(x) for x in judgment_file.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == list(QIDS)
    assert len(judgments) == 10 and sum(j["score"] == -1 for j in judgments) == 2

    # FastChat's own loader layout: <model>.jsonl keyed by question_id
    assert set(mt.load_answer_dir(tmp_path / "model_answer")) == {"m1"}
    # and FastChat's own show_result reads the judgment file to the same numbers
    frames = fastchat_single_result(judgment_file)
    assert frames["first"].loc[("m1", 1), "score"] == pytest.approx(t1)
    assert frames["second"].loc[("m1", 2), "score"] == pytest.approx(t2)
    assert frames["average"].loc["m1", "score"] == pytest.approx(overall)


def test_run_mtbench_resumes_partial_judgments(questions, mt_files, tmp_path):
    cfg = MTBenchConfig(
        question_file=str(mt_files["questions"]),
        reference_file=str(mt_files["references"]),
        judge_prompts_file=str(mt_files["judge_prompts"]),
        judge="endpoint",
        judge_model="judge-x",
    )
    with ChatServer(judge_responder) as server:
        judge = make_judge(dataclasses.replace(cfg, base_url=server.base_url))
        mt.run_mtbench(FakeChat(questions), judge, cfg, tmp_path, "m1", questions=questions[:2])
        assert len(server.requests) == 4
        metrics = mt.run_mtbench(FakeChat(questions), judge, cfg, tmp_path, "m1", questions=questions)
        assert len(server.requests) == 10  # only the 3 new questions were judged
    lines = (tmp_path / "model_judgment" / "judge-x_single.jsonl").read_text().splitlines()
    assert len(lines) == 10
    assert metrics["mtbench/score"] == pytest.approx(expected_means()[2])


# ------------------------------------------------------------------------------------ summary
def row(model, qid, turn, score):
    return {
        "question_id": qid,
        "model": model,
        "judge": ["gpt-4", "single-v1"],
        "user_prompt": "...",
        "judgment": f"Rating: [[{score}]]" if score != -1 else "no rating",
        "score": score,
        "turn": turn,
        "tstamp": 0.0,
    }


HAND_MADE = [
    row("alpha", 81, 1, 8),
    row("alpha", 81, 2, 6),
    row("alpha", 101, 1, 7),
    row("alpha", 101, 2, -1),
    row("alpha", 111, 1, 9.5),
    row("alpha", 111, 2, 5),
    row("alpha", 151, 1, -1),
    row("alpha", 151, 2, 3),
    row("beta", 81, 1, 4),
    row("beta", 81, 2, -1),
    row("beta", 101, 1, -1),
    row("beta", 101, 2, -1),
    row("gamma", 81, 1, -1),
    row("gamma", 81, 2, -1),
]


@pytest.fixture
def judgment_file(tmp_path):
    return mt.write_jsonl(tmp_path / "model_judgment" / "gpt-4_single.jsonl", HAND_MADE)


def test_summarize_known_means(judgment_file):
    s = mt.summarize_file(judgment_file)
    a = s["alpha"]
    assert a["turn1"] == pytest.approx((8 + 7 + 9.5) / 3)
    assert a["turn2"] == pytest.approx((6 + 5 + 3) / 3)
    assert a["score"] == pytest.approx((8 + 6 + 7 + 9.5 + 5 + 3) / 6)  # mean of rows, not of turn means
    assert a["categories"] == {"humanities": 3.0, "math": 7.25, "reasoning": 7.0, "writing": 7.0}
    assert (a["n"], a["scored"], a["missing"], a["turn1_missing"], a["turn2_missing"]) == (8, 6, 2, 1, 1)
    b = s["beta"]
    assert (b["turn1"], b["turn2"], b["score"], b["missing"]) == (4.0, None, 4.0, 3)
    g = s["gamma"]  # every rating failed: no mean at all, never -1
    assert (g["turn1"], g["turn2"], g["score"], g["categories"], g["missing"]) == (None, None, None, {}, 2)
    assert mt.summarize(HAND_MADE, models=["beta"]).keys() == {"beta"}
    m = mt.metrics(a)
    assert m["mtbench/score"] == pytest.approx(38.5 / 6) and m["mtbench/math"] == 7.25
    assert "mtbench/turn2" not in mt.metrics(b)


def fastchat_single_result(path):
    """Run FastChat's ``show_result.display_result_single`` on ``path``; return the frames it prints.

    ``fastchat.llm_judge.show_result`` imports only pandas (unlike ``common``), so the real function
    runs; its module-level ``print`` is swapped for a collector to get the DataFrames themselves.
    """
    import pandas as pd
    from fastchat.llm_judge import show_result

    printed = []
    show_result.print = lambda *args, **kw: printed.extend(args)
    try:
        args = argparse.Namespace(
            input_file=str(path), bench_name="mt_bench", judge_model="gpt-4", model_list=None
        )
        show_result.display_result_single(args)
    finally:
        del show_result.print
    frames = [x for x in printed if isinstance(x, pd.DataFrame)]
    assert len(frames) == 3
    return dict(zip(("first", "second", "average"), frames, strict=True))


def test_summarize_agrees_with_fastchat_show_result(judgment_file):
    frames = fastchat_single_result(judgment_file)
    ours = mt.summarize_file(judgment_file)
    first = {m: v for (m, _turn), v in frames["first"]["score"].items()}
    second = {m: v for (m, _turn), v in frames["second"]["score"].items()}
    average = frames["average"]["score"].to_dict()
    # FastChat has no row at all for a model/turn whose ratings all failed; we say None
    assert first == pytest.approx({m: s["turn1"] for m, s in ours.items() if s["turn1"] is not None})
    assert second == pytest.approx({m: s["turn2"] for m, s in ours.items() if s["turn2"] is not None})
    assert average == pytest.approx({m: s["score"] for m, s in ours.items() if s["score"] is not None})
    assert set(average) == {"alpha", "beta"}


def test_summarize_rejects_other_files(tmp_path):
    path = mt.write_jsonl(tmp_path / "a.jsonl", [{"question_id": 81, "model_id": "m", "choices": []}])
    with pytest.raises(SrscaleError, match="not a FastChat single-grading judgment"):
        mt.summarize_file(path)


# ------------------------------------------------------------------------------------ CLI
def test_cli_prints_table(judgment_file, capsys):
    assert cli.main(["summarize", str(judgment_file)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(x for x in lines if x.startswith("model") and "turn 1" in x)
    assert header.split() == ["model", "turn", "1", "turn", "2", "overall", "scored", "missing"]
    alpha = next(x for x in lines if x.startswith("alpha") and "8.17" in x)
    assert alpha.split() == ["alpha", "8.17", "4.67", "6.42", "6", "2"]
    assert next(x for x in lines if x.startswith("gamma")).split() == ["gamma", "-", "-", "-", "0", "2"]
    cat_header = next(x for x in lines if x.startswith("model") and "writing" in x)
    assert cat_header.split() == ["model", "humanities", "math", "reasoning", "writing"]
    assert [x.split() for x in lines if x.startswith("alpha")][1] == ["alpha", "3.00", "7.25", "7.00", "7.00"]


def test_cli_as_module(judgment_file, mt_files):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "srscale.mtbench",
            "summarize",
            str(judgment_file),
            "--model",
            "alpha",
            "--question-file",
            str(mt_files["questions"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "alpha" in proc.stdout and "beta" not in proc.stdout and "6.42" in proc.stdout

    proc = subprocess.run(
        [sys.executable, "-m", "srscale.mtbench", "summarize", str(judgment_file.parent / "missing.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().startswith("error: MT-Bench: file not found")
        and len(proc.stderr.strip().splitlines()) == 1
    )


def test_cli_unknown_model(judgment_file, capsys):
    assert cli.main(["summarize", str(judgment_file), "--model", "delta"]) == 2
    assert "no judgments of delta" in capsys.readouterr().err
