"""Sweeps through Hydra's launcher plugins: thread shares, per-job cluster requests, failure lines,
the presets composing, and a real sweep through submitit's local executor (joblib: test_sweep_status,
test_tracking_server)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from conftest import NO_GATE, SMALL, run_cli, store
from srscale import multirun, resources
from srscale.__main__ import CONF_DIR
from srscale.config import ConfigError, ModelConfig, ResourcesConfig
from srscale.errors import SrscaleError
from srscale.tracking import find_runs
from test_config import _setup, compose_cfg

LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))
HUB_PRESETS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")
                     if "source: hub" in p.read_text())


# ------------------------------------------------------------------------------------- threads
@pytest.mark.parametrize("requested,cores,parallel,expected", [
    (None, 2, 1, 2), (None, 2, 2, 1), (None, 16, 4, 4), (None, 16, 3, 5), (None, 2, 4, 1), (3, 2, 2, 3),
])
def test_thread_share_keeps_jobs_times_threads_within_cores(requested, cores, parallel, expected) -> None:
    threads = resources.decide_torch_threads(requested, cores, parallel)
    assert threads == expected
    if requested is None and parallel <= cores:
        assert threads * parallel <= cores


def test_thread_count_rejects_zero() -> None:
    with pytest.raises(ValueError):
        resources.decide_torch_threads(0, 4, 1)


@pytest.mark.parametrize("n_jobs,cores,expected", [(-1, 8, 8), (-2, 8, 7), (3, 8, 3), (-16, 8, 1), (12, 2, 12)])
def test_joblib_worker_count_follows_joblib_rule(n_jobs, cores, expected) -> None:
    assert resources.joblib_workers(n_jobs, cores) == expected


def test_parallel_jobs_by_launcher() -> None:
    joblib = {"_target_": resources.JOBLIB_TARGET, "n_jobs": -1}
    assert resources.parallel_jobs(joblib, cores=6, env={}) == 6
    assert resources.parallel_jobs({**joblib, "n_jobs": 2}, cores=6, env={}) == 2
    local = {"_target_": "hydra_plugins.srscale_plugins.launchers.SrscaleLocalLauncher"}
    assert resources.parallel_jobs(local, cores=6, env={resources.PARALLEL_JOBS_ENV: "3"}) == 3
    assert resources.parallel_jobs(None, cores=6, env={}) == 1  # basic launcher / single run


def test_available_cores_respects_affinity_and_slurm() -> None:
    assert resources.available_cores(affinity=[0, 1, 2, 3], env={}) == 4
    assert resources.available_cores(affinity=[0, 1, 2, 3], env={"SLURM_CPUS_PER_TASK": "2"}) == 2
    assert resources.available_cores(affinity=[0, 1], env={"SLURM_CPUS_PER_TASK": "8"}) == 2


def test_apply_torch_threads_sets_torch_and_child_env(monkeypatch) -> None:
    import torch

    before = torch.get_num_threads()
    for name in resources.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    try:
        resources.apply_torch_threads(1)
        assert torch.get_num_threads() == 1
        assert all(resources.os.environ[n] == "1" for n in resources.THREAD_ENV_VARS)
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- cluster requests
def test_job_request_takes_preset_figures_then_launcher_fallbacks() -> None:
    defaults = {"gpus_per_node": 4, "cpus_per_task": 10, "mem_gb": 100, "timeout_min": 30}
    assert resources.job_request({"gpus": 1, "cpus": 8, "mem_gb": 64, "time_min": 720}, 1, defaults) == {
        "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "timeout_min": 720}
    assert resources.job_request({"gpus": None, "cpus": None, "mem_gb": 16, "time_min": None}, 1, defaults) == {
        "gpus_per_node": 4, "cpus_per_task": 10, "mem_gb": 16, "timeout_min": 30}
    # 0 GPUs is a figure (CPU job), not "unset"
    assert resources.job_request({"gpus": 0}, 1, defaults)["gpus_per_node"] == 0


def test_job_request_gives_each_training_process_a_gpu() -> None:
    request = resources.job_request({"gpus": 1, "cpus": 16, "mem_gb": 192, "time_min": 2880}, 8, {})
    assert request["gpus_per_node"] == 8
    assert resources.job_request({"gpus": 8}, 2, {})["gpus_per_node"] == 8


def test_group_by_request_keeps_first_appearance_order() -> None:
    a, b = {"gpus_per_node": 1, "mem_gb": 32}, {"gpus_per_node": 8, "mem_gb": 192}
    groups = resources.group_by_request([a, b, dict(a), b])
    assert groups == [(a, [0, 2]), (b, [1, 3])]


def test_resources_schema_validates() -> None:
    assert ResourcesConfig(gpus=0, cpus=2, mem_gb=4, time_min=60).gpus == 0
    with pytest.raises(ConfigError, match="model.resources.time_min"):
        ResourcesConfig(time_min=0)
    with pytest.raises(ConfigError, match="model.resources.gpus"):
        ResourcesConfig(gpus=-1)


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_hub_presets_state_what_one_job_needs(preset: str) -> None:
    model: ModelConfig = compose_cfg([f"model={preset}"]).model
    res = model.resources
    assert None not in (res.gpus, res.cpus, res.mem_gb, res.time_min), res
    assert res.gpus >= 1 and res.gpus * 80 >= model.memory_gb  # 80 GB GPUs hold the estimate
    assert res.mem_gb >= 16 and res.time_min >= 60


def test_tiny_presets_ask_for_no_gpu() -> None:
    for preset in ("tiny", "tiny_300k", "tiny_1m", "tiny_4m", "tiny_16m"):
        assert compose_cfg([f"model={preset}"]).model.resources.gpus == 0


def test_resource_overrides_do_not_change_the_job_directory() -> None:
    from hydra import compose, initialize_config_dir

    _setup()
    dirs = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for extra in ([], ["model.resources.time_min=999", "model.resources.gpus=2", "generation.torch_threads=1"]):
            cfg = compose(config_name="config", overrides=["model=tiny_4m", *extra], return_hydra_config=True)
            dirs.append(cfg.hydra.job.override_dirname)
    assert dirs == ["model=tiny_4m", "model=tiny_4m"]


# ------------------------------------------------------------------------------ failure lines
def test_failure_lines() -> None:
    ov = ["model=tiny", "lora=r8"]
    assert multirun.failure_line(ov, "COMPLETED", None) is None
    assert multirun.failure_line(ov, "COMPLETED", {"gate_outcome": "disqualified"}) is None
    assert multirun.failure_line(ov, "COMPLETED", multirun.JobFailed("no data")) == "model=tiny,lora=r8: no data"
    assert multirun.failure_line(ov, "FAILED", SrscaleError("model=x: missing\nmore")) == "model=tiny,lora=r8: model=x: missing"
    assert multirun.failure_line([], "FAILED", RuntimeError("CUDA out of memory")) == \
        "(defaults): RuntimeError: CUDA out of memory"
    assert multirun.failure_line(ov, "FAILED", KeyError("k")) == "model=tiny,lora=r8: KeyError: 'k'"


def test_failures_are_taken_once() -> None:
    multirun.take_failures()
    multirun.record_failure("a: why")
    assert multirun.take_failures() == ["a: why"]
    assert multirun.take_failures() == []


def test_check_launcher_lines(monkeypatch) -> None:
    assert multirun.check_launcher(["model=tiny", "hydra/launcher=joblib"]) is None  # installed here
    assert "cloudpickle" in multirun.check_launcher(["hydra/launcher=ray"])
    monkeypatch.setitem(multirun.LAUNCHER_PLUGINS, "joblib", ("hydra_plugins.srscale_absent", "hydra-joblib-launcher"))
    line = multirun.check_launcher(["hydra/launcher=joblib"])
    assert line.startswith("srscale: hydra/launcher=joblib needs hydra-joblib-launcher") and ".[cluster]" in line


# ------------------------------------------------------------------------- presets and SLURM
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_presets_compose_over_the_plugin_schemas(launcher: str) -> None:
    from hydra import compose, initialize_config_dir

    _setup()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
        assert cfg.hydra.sweeper._target_.endswith("SrscaleSweeper")
        target = cfg.hydra.launcher._target_
        assert target.endswith({"joblib": "JoblibLauncher", "submitit_local": "SrscaleLocalLauncher",
                                "submitit_slurm": "SrscaleSlurmLauncher"}[launcher])
        with pytest.raises(Exception, match="n_jbos|not in"):  # a misspelt key fails at start
            compose(config_name="config", overrides=[f"hydra/launcher={launcher}", "hydra.launcher.n_jbos=2"],
                    return_hydra_config=True)


@pytest.fixture
def fresh_global_hydra():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def _slurm_launcher(tmp_path: Path, extra: list[str]):
    """srscale's SLURM launcher set up as Hydra sets it up for a sweep (no cluster needed until launch)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext, RunMode

    _setup()
    hydra = Hydra.create_main_hydra2("srscale", create_config_search_path(str(CONF_DIR)))
    cfg = hydra.compose_config("config", [
        "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=lab",
        f"hydra.sweep.dir={tmp_path}", *extra], run_mode=RunMode.MULTIRUN)
    context = HydraContext(config_loader=hydra.config_loader, callbacks=None)
    return Plugins.instance().instantiate_launcher(hydra_context=context, task_function=lambda c: None, config=cfg)


def test_slurm_sweep_asks_each_job_for_its_own_preset_resources(tmp_path: Path, monkeypatch,
                                                              fresh_global_hydra) -> None:
    # submitit's SLURM executor only checks that `srun` is on PATH; nothing is submitted here.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{resources.os.environ['PATH']}")
    launcher = _slurm_launcher(tmp_path, [])
    jobs = [["model=tinyllama"], ["model=llama70b"], ["model=llama70b", "train.distributed.num_processes=8",
                                                     "model.load_in_4bit=false"], ["model=phi1"]]
    requests = launcher.job_requests(jobs)
    assert requests == [
        {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 360},
        {"gpus_per_node": 1, "cpus_per_task": 16, "mem_gb": 192, "timeout_min": 2880},
        {"gpus_per_node": 8, "cpus_per_task": 16, "mem_gb": 192, "timeout_min": 2880},
        {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 360},
    ]
    groups = resources.group_by_request(requests)
    assert [positions for _, positions in groups] == [[0, 3], [1], [2]]
    # What sbatch would receive for each group (submitit's own rendering of the executor's parameters).
    scripts = [launcher.make_executor(request)._executor._make_submission_file_text("python job.py", "uid")
               for request, _ in groups]
    for script, (request, _) in zip(scripts, groups, strict=True):
        flags = {line for line in script.splitlines() if line.startswith("#SBATCH")}
        assert f"#SBATCH --gpus-per-node={request['gpus_per_node']}" in flags
        assert f"#SBATCH --cpus-per-task={request['cpus_per_task']}" in flags
        assert f"#SBATCH --mem={request['mem_gb']}GB" in flags
        assert f"#SBATCH --time={request['timeout_min']}" in flags
        assert {"#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --requeue"} <= flags
        assert any(line.startswith("#SBATCH --signal=USR2@120") for line in flags)


# -------------------------------------------------------------------------------- real sweeps
def _finished_with_every_metric(cwd: Path, expected_jobs: int) -> list:
    runs = find_runs(store(cwd), "srscale")
    assert len(runs) == expected_jobs
    client = mlflow.MlflowClient(tracking_uri=store(cwd))
    for run in runs:
        assert run.info.status == "FINISHED"
        keys = set(run.data.metrics)
        assert {"sft/loss", "gate/probe/parse_rate", "iter/candidates", "eval/task/accuracy"} <= keys, keys
        assert [m.step for m in client.get_metric_history(run.info.run_id, "iter/candidates")] == [1]
    return runs


@pytest.mark.slow
def test_two_jobs_through_submitit_local(tmp_path: Path, env: dict) -> None:
    out = run_cli(["-m", "hydra/launcher=submitit_local", *SMALL, *NO_GATE, "self_reward.iterations=1",
                   "seed=1,2"], tmp_path, env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "submitit 'local': 2 job(s) with gpus_per_node=0, cpus_per_task=2, mem_gb=4, timeout_min=60" in out.stdout + out.stderr
    _finished_with_every_metric(tmp_path, 2)
    logs = list((tmp_path / "outputs" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
    cores = resources.available_cores()
    for jobdir in (tmp_path / "outputs").iterdir():
        if jobdir.is_dir() and not jobdir.name.startswith("."):
            threads = max(1, cores // 2)
            assert f"torch threads: {threads} ({cores} cores, 2 parallel jobs)" in (jobdir / "__main__.log").read_text()
