"""Stage records that check their outputs and inputs, job-relative paths, cost, exactly-once logging."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from srscale.config import TrackingConfig
from srscale.sampling import Completion, TokenCount
from srscale.seed_data import write_jsonl
from srscale.stagebook import Cost, Job, mark_done, model_dir_ok, output_problem, rel, resolve, stage_record
from srscale.tracking import make_tracker, metric_history


def _stage(tmp_path: Path, n: int = 5, **kw) -> tuple[Path, dict]:
    d = tmp_path / "stage"
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "judgments.jsonl", [{"i": i} for i in range(n)])
    return d, mark_done(d, {"metric": 1.0}, outputs=["judgments.jsonl"], **kw)


def test_a_complete_stage_is_found_again(tmp_path: Path) -> None:
    d, rec = _stage(tmp_path)
    assert rec["outputs"] == {"judgments.jsonl": 5}
    assert stage_record(d) == rec


def test_a_short_output_file_makes_the_stage_incomplete(tmp_path: Path) -> None:
    d, rec = _stage(tmp_path, n=384)
    lines = (d / "judgments.jsonl").read_text().splitlines()
    (d / "judgments.jsonl").write_text("\n".join(lines[:100]) + "\n")
    assert output_problem(d, rec) == "judgments.jsonl has 100 of 384 lines"
    assert stage_record(d) is None
    assert not (d / "DONE.json").exists()  # the stage is redone, not half-used


def test_a_line_cut_mid_write_or_a_missing_file_makes_it_incomplete(tmp_path: Path) -> None:
    d, _ = _stage(tmp_path)
    with (d / "judgments.jsonl").open("a") as fh:
        fh.write('{"i": 5, "text": "cut of')
    assert stage_record(d) is None
    d, _ = _stage(tmp_path / "b")
    (d / "judgments.jsonl").unlink()
    assert stage_record(d) is None


def test_an_unreadable_record_is_not_a_crash(tmp_path: Path) -> None:
    d, _ = _stage(tmp_path)
    (d / "DONE.json").write_text('{"metric": 1.0, "outp')
    assert stage_record(d) is None


def test_a_stage_is_stale_when_an_input_was_redone(tmp_path: Path) -> None:
    up_dir, upstream = _stage(tmp_path / "up")
    d, _ = _stage(tmp_path / "down", inputs=[upstream])
    assert stage_record(d, [upstream]) is not None
    redone = mark_done(up_dir, {"metric": 2.0}, outputs=["judgments.jsonl"])
    assert stage_record(d, [redone]) is None


def test_a_damaged_model_directory_makes_the_stage_incomplete(tmp_path: Path) -> None:
    d = tmp_path / "sft"
    (d / "model").mkdir(parents=True)
    (d / "model" / "config.json").write_text("{}")
    (d / "model" / "model.safetensors").write_bytes(b"x" * 10)
    mark_done(d, {}, models=["model"])
    assert model_dir_ok(d / "model") and stage_record(d) is not None
    (d / "model" / "model.safetensors").write_bytes(b"")
    assert stage_record(d) is None


def test_paths_in_records_are_relative_to_the_job(tmp_path: Path) -> None:
    root = tmp_path / "job"
    assert rel(root, root / "iter_1" / "dpo" / "model") == "iter_1/dpo/model"
    assert resolve(tmp_path / "moved", "iter_1/dpo/model") == tmp_path / "moved" / "iter_1" / "dpo" / "model"
    assert rel(root, Path("/elsewhere/model")) == "/elsewhere/model"
    assert resolve(root, "/elsewhere/model") == Path("/elsewhere/model")
    assert rel(root, None) is None and resolve(root, None) is None


def test_cost_counts_flops_from_tokens() -> None:
    tokens = TokenCount().add([[Completion("a", "stop", 10, 4), Completion("b", "length", 10, 6, True)], None])
    assert (tokens.prompt, tokens.new, tokens.sequences, tokens.truncated_outputs, tokens.truncated_inputs) == (20, 10, 2, 1, 1)
    c = Cost()
    c.add_generation(tokens, params=1000)
    assert c.flops == 2 * 1000 * 30
    c.add_training(100, params=1000)
    assert c.flops == 2 * 1000 * 30 + 6 * 1000 * 100 and c.train_tokens == 100
    c.add_training(10, params=1000, reference_forward=True)
    assert c.flops == 2 * 1000 * 30 + 6 * 1000 * 100 + 8 * 1000 * 10
    total = Cost.total([{"wall_s": 1.0, "flops": 2.0, "peak_mem_mb": 5.0}, {"wall_s": 2.0, "flops": 1.0,
                                                                              "peak_mem_mb": None}])
    assert total["wall_s"] == 3.0 and total["flops"] == 3.0 and total["peak_mem_mb"] == 5.0


@pytest.fixture()
def tracked_job(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = make_tracker(TrackingConfig(tracking_uri=uri, experiment="once"), run_name="job")
    return Job(cfg=None, root=tmp_path, tracker=tracker), uri


def test_metrics_are_logged_once_even_after_a_kill_before_the_marker(tracked_job) -> None:
    job, uri = tracked_job
    d = job.dir("iter_1")
    metrics = {"iter/valid_pairs": 3, "iter/score_mean": 4.5, "iter/none": None}
    job.log_once(d, metrics, step=1, series={"sft/loss": [(1, 2.0), (2, 1.5)]})
    (d / "LOGGED").unlink()  # the kill: metrics reached the store, the marker did not
    job.log_once(d, metrics, step=1, series={"sft/loss": [(1, 2.0), (2, 1.5)]})
    job.log_once(d, metrics, step=1)  # marker present now: nothing at all
    assert metric_history(uri, job.tracker.run_id, "iter/valid_pairs") == [(1, 3.0)]
    assert metric_history(uri, job.tracker.run_id, "sft/loss") == [(1, 2.0), (2, 1.5)]
    assert json.loads((d / "LOGGED").read_text()) == [job.tracker.run_id]


def test_a_stage_logs_into_a_new_run_of_another_store(tracked_job, tmp_path: Path) -> None:
    job, _ = tracked_job
    d = job.dir("sft")
    job.log_once(d, {"sft/steps": 4}, step=0)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    job.tracker = make_tracker(TrackingConfig(tracking_uri=other, experiment="once"), run_name="job")
    job.log_once(d, {"sft/steps": 4}, step=0)
    assert metric_history(other, job.tracker.run_id, "sft/steps") == [(0, 4.0)]
    assert len(json.loads((d / "LOGGED").read_text())) == 2


def test_log_points_skips_points_the_run_has(tracked_job) -> None:
    job, uri = tracked_job
    job.log_points({"cost/total/flops": 10.0}, step=1)
    job.log_points({"cost/total/flops": 10.0}, step=1)
    job.log_points({"cost/total/flops": 30.0}, step=3)
    assert metric_history(uri, job.tracker.run_id, "cost/total/flops") == [(1, 10.0), (3, 30.0)]
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(job.tracker.run_id).data.metrics["cost/total/flops"] == 30.0
