"""sdeflow-bench end to end, and every config in conf/ composes and builds."""

import csv
import json

import pytest
import yaml
from hydra.utils import instantiate

import sdeflow as sf
import sdeflow.training.schemas  # noqa: F401  (registers the structured configs)
from sdeflow.apps.common import config_dir
from sdeflow.apps.solvers import solver_configs

from helpers import cli, compose_config, every_configured_solver

SMALL = [
    "n_trajectory=16",
    "n_distribution=200",
    "n_directions=16",
    "progress=false",
    "reference.rtol=1e-7",
    "reference.atol=1e-7",
]


def options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


# Every solver config: each file of conf/solver but all.yaml, the marker that stands for them all.
SOLVERS = [name for name in options("solver") if name != "all"]


def run_cli(tmp_path, *args, **kwargs):
    return cli(
        tmp_path,
        "sdeflow.apps.bench.app",
        *args,
        f"hydra.run.dir={tmp_path}/run",
        f"hydra.sweep.dir={tmp_path}/multi",
        **kwargs,
    )


@pytest.mark.parametrize("group", ["sde", "problem", "timesteps"])
def test_every_config_composes_and_instantiates(group):
    for name in options(group):
        assert instantiate(compose_config("bench", f"{group}={name}")[group]) is not None


def test_solver_all_is_every_config_of_conf_solver_and_each_builds_a_sampler():
    every = every_configured_solver()
    assert list(every) == SOLVERS
    assert all(isinstance(solver, sf.Sampler) for solver in every.values())
    # One file, one config: conf/solver/<name>.yaml selects the node <name> and nothing else.
    assert all(list(compose_config("bench", f"solver={name}").solver) == [name] for name in SOLVERS)


def test_solver_all_takes_command_line_settings_and_resolves_against_the_whole_config():
    cfg = compose_config("bench", "problem=gmm16", "+solver.ddim.denoise=true")
    assert list(cfg.solver) == ["all", "ddim"]  # the default's marker (solver: all) and the setting given
    solvers = solver_configs(cfg)
    assert list(solvers) == SOLVERS and solvers.ddim.denoise is True
    assert solvers.unipc_2_bh2_jump.stats == cfg.problem  # ${oc.select:problem,null}, read from the root
    assert solver_configs(cfg) == solvers  # again: nothing changes
    chosen = compose_config("bench", "solver=[ddim,dpmpp_2m]")
    assert list(solver_configs(chosen)) == ["ddim", "dpmpp_2m"]


@pytest.mark.slow
def test_default_run_prints_table_and_writes_csv_json_png(tmp_path):
    proc = run_cli(tmp_path, "nfe=[5,10]", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert "| solver | kind |" in proc.stdout and "floor" in proc.stdout
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert {r["solver"] for r in rows} == set(SOLVERS)
    ran = [r for r in rows if not r.get("skipped")]
    assert all(int(r["nfe"]) <= int(r["budget"]) for r in ran if r["budget"])
    assert (run / "error_vs_nfe.png").stat().st_size > 10_000
    assert (run / "results.json").exists()


@pytest.mark.slow
def test_multirun_sweeps_solvers_and_nfe(tmp_path):
    proc = run_cli(tmp_path, "-m", "solver=ode_euler,euler_maruyama", "nfe=4,8", *SMALL)
    assert proc.returncode == 0, proc.stderr
    jobs = sorted((tmp_path / "multi").glob("*/results.csv"))
    assert len(jobs) == 4
    seen = {(r["solver"], r["nfe"]) for j in jobs for r in csv.DictReader(open(j))}
    assert seen == {("ode_euler", "4"), ("ode_euler", "8"), ("euler_maruyama", "4"), ("euler_maruyama", "8")}
    # A failed job keeps the others: remove one job's results (a failed job writes none) and report the sweep.
    jobs[0].unlink()
    (jobs[0].parent / "results.json").unlink()
    report = cli(tmp_path, "sdeflow.apps.report", str(tmp_path / "multi"))
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader(open(tmp_path / "multi" / "report.csv")))
    floors = [r for r in rows if r["solver"] == "floor (exact vs exact)"]
    rows = [r for r in rows if r not in floors]
    assert len(rows) == 3 and "failed jobs" in report.stdout
    # Each job's floor of two exact sets comes with it, as the job wrote it.
    assert len(floors) == 3 and all(
        float(f["sw2"]) == json.loads((tmp_path / "multi" / f["job"] / "results.json").read_text())["floor"]["sw2"]
        for f in floors
    )
    for row in rows:
        own = next(csv.DictReader(open(tmp_path / "multi" / row["job"] / "results.csv")))
        assert row["solver"] == own["solver"] and float(row["nfe"]) == float(own["nfe"])
        assert float(row.get("rms_median") or row["sw2"]) == float(own.get("rms_median") or own["sw2"])
    assert (tmp_path / "multi" / "report.png").exists()


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep_and_the_sweep_exits_non_zero(tmp_path):
    proc = run_cli(tmp_path, "-m", "solver=ode_euler", "nfe=0,5", *SMALL)
    jobs = sorted((tmp_path / "multi").glob("[0-9]*"))
    assert "nfe must be a positive integer" in (jobs[0] / "error.txt").read_text()
    assert (jobs[1] / "results.csv").exists()
    # Every job ran and wrote its results; then the command says how many failed, and fails.
    assert proc.returncode != 0
    assert "1 job(s) of the multirun failed" in proc.stderr and str(jobs[0] / "error.txt") in proc.stderr


@pytest.mark.slow
def test_help_lists_the_config_groups(tmp_path):
    proc = cli(tmp_path, "sdeflow.apps.bench.app", "--help", timeout=120)
    assert proc.returncode == 0 and "solver:" in proc.stdout and "timesteps:" in proc.stdout and "sde:" in proc.stdout


@pytest.mark.slow
def test_bad_overrides_fail_clearly(tmp_path):
    typo = run_cli(tmp_path, "solver=ode_eulr", *SMALL)
    assert typo.returncode != 0 and "ode_eulr" in typo.stderr and "Available options" in typo.stderr
    bad = run_cli(tmp_path, "nfe=[0]", *SMALL)
    assert bad.returncode != 0 and "nfe must be a positive integer" in bad.stderr
    unknown_key = run_cli(tmp_path, "nfee=3", *SMALL)
    assert unknown_key.returncode != 0 and "nfee" in unknown_key.stderr


@pytest.mark.slow
@pytest.mark.parametrize("group", ["model", "loss", "data"])
def test_every_training_config_composes_and_instantiates(group):
    for name in options(group):
        cfg = compose_config("train", f"{group}={name}")
        sde = instantiate(cfg.sde)
        if group == "model":
            assert instantiate(cfg.model.net) is not None and instantiate(cfg.model.prediction) is not None
        elif group == "loss":
            assert instantiate(cfg.loss, sde=sde) is not None
        elif "???" not in str(cfg.data.dataset.values()):  # cifar10 and folder need a local path
            assert tuple(instantiate(cfg.data.dataset).shape) == tuple(cfg.data.shape)


def test_eval_configs_compose():
    from sdeflow.eval.features import TrainedClassifier

    assert options("eval") == ["classifier", "identity", "inception"]
    assert instantiate(compose_config("evaluate", "eval=identity", "problem=gmm16").eval).name == "identity"
    classifier = compose_config("evaluate", "eval=classifier", "checkpoint=x").eval
    assert isinstance(instantiate(classifier), TrainedClassifier)
    assert compose_config("evaluate", "eval=inception", "checkpoint=x").eval.weights is None


@pytest.mark.slow
def test_structured_train_config_rejects_typos_and_wrong_types(tmp_path):
    run = lambda *a: cli(tmp_path, "sdeflow.apps.train", *a, f"hydra.run.dir={tmp_path}/t", timeout=300)  # noqa: E731
    typo = run("train.stpes=3")
    assert typo.returncode != 0 and "stpes" in typo.stderr
    wrong = run("train.steps=many")
    assert wrong.returncode != 0 and "many" in wrong.stderr and "int" in wrong.stderr.lower()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["parallel", "local"])
def test_multirun_with_joblib_and_submitit_local_launchers(tmp_path, launcher):
    proc = run_cli(tmp_path, "-m", f"hydra/launcher={launcher}", "solver=ode_euler,ddim", "nfe=8", *SMALL)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "multi").glob("*/results.csv"))) == 2


@pytest.mark.slow
def test_optuna_sweeper_tunes_a_solver_parameter(tmp_path):
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra/sweeper=tune",
        "solver=pc_langevin",
        "nfe=10",
        "objective=sw2",
        "solver.pc_langevin.corrector.snr=interval(0.02,0.5)",
        "hydra.sweeper.n_trials=3",
        *SMALL,
    )
    assert proc.returncode == 0, proc.stderr
    best = yaml.safe_load(open(tmp_path / "multi" / "optimization_results.yaml"))
    assert 0.02 <= best["best_params"]["solver.pc_langevin.corrector.snr"] <= 0.5 and best["best_value"] > 0


@pytest.mark.slow
def test_wandb_offline_writes_its_run_folder_into_a_temporary_directory(tmp_path):
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wb"),
        "WANDB_CACHE_DIR": str(tmp_path / "wbc"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wbcfg"),
    }
    proc = run_cli(tmp_path, "solver=ode_euler", "nfe=4", *SMALL, env=env)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "run").glob("wandb/offline-run-*")), (
        "the offline run folder is written inside the run directory"
    )
