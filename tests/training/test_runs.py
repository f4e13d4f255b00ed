"""Training and command runs that lose nothing: seeds, signals, kills, resumes, locks, sweeps and bad input."""

import os
import re
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import requires

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.apps.train import newest_checkpoint
from sdeflow.core import distributed
from sdeflow.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sdeflow.core.io import NonFiniteResult, RunFolderLocked, atomic_write_bytes, lock_run_folder, write_csv, write_json
from sdeflow.eval.inception import load_inception
from sdeflow.nets import ScoreMLP
from sdeflow.training import data as D
from sdeflow.training.losses import DSMLoss
from sdeflow.training.trainer import Trainer, TrainingDiverged

from helpers import ENV, cli

# A toy run that takes a few seconds: long enough to be interrupted between checkpoints.
TOY = [
    "data=toy",
    "model=mlp",
    "model.net.hidden=32",
    "model.net.blocks=1",
    "train.batch_size=32",
    "train.warmup=10",
    "sample.every=0",
    "sample.n=8",
    "sample.nfe=4",
    "progress=false",
]


def train(cwd, run, *args):
    return cli(cwd, "sdeflow.apps.train", *TOY, *args, f"hydra.run.dir={run}")


def weights(path) -> list[torch.Tensor]:
    state = load_checkpoint(path)
    return [*state["model"].values(), *state["ema"].values()]


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert len(wa) == len(wb) and all(torch.equal(x, y) for x, y in zip(wa, wb))


# --- Seeds, signals and kills ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run of 1,500 steps: what every interrupted and resumed run must reproduce bit for bit."""
    tmp = tmp_path_factory.mktemp("straight")
    proc = train(tmp, tmp / "run", "train.steps=1500", "checkpoint_every=100")
    assert proc.returncode == 0, proc.stderr
    return tmp / "run" / "checkpoint.pt"


@pytest.mark.slow
def test_the_same_command_gives_the_same_weights_and_another_seed_does_not(tmp_path, straight):
    again = train(tmp_path, tmp_path / "again", "train.steps=1500", "checkpoint_every=100")
    assert again.returncode == 0, again.stderr
    assert_same_weights(straight, tmp_path / "again" / "checkpoint.pt")
    other = train(tmp_path, tmp_path / "other", "train.steps=1", "train.seed=1")
    first = train(tmp_path, tmp_path / "first", "train.steps=1")
    assert other.returncode == 0 and first.returncode == 0
    # Control: the initial weights do follow the seed.
    assert not torch.equal(
        weights(tmp_path / "other" / "checkpoint.pt")[0], weights(tmp_path / "first" / "checkpoint.pt")[0]
    )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill", "ctrl-c", "sigterm"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path, straight, sig):
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "sdeflow.apps.train",
        *TOY,
        "train.steps=1500",
        "checkpoint_every=100",
        f"hydra.run.dir={run}",
    ]
    proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    time.sleep(0.3)  # between two periodic checkpoints
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    step = load_checkpoint(run / "checkpoint.pt")["step"]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        # A checkpoint at the step it stopped at, and one line that says how to go on.
        assert proc.returncode == 128 + sig, err
        assert f"stopped by {signal.Signals(sig).name} at step {step}" in err and "run the same command again" in err
        assert "Traceback" not in err
        assert 0 < step < 1500
    resumed = train(tmp_path, run, "train.steps=1500", "checkpoint_every=100")
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {step}" in resumed.stdout
    assert_same_weights(straight, run / "checkpoint.pt")


# --- Resuming: the newest state wins ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_rerun_continues_from_its_own_newer_checkpoint_not_from_resume(tmp_path):
    assert train(tmp_path, tmp_path / "a", "train.steps=40").returncode == 0
    first = train(tmp_path, tmp_path / "b", "train.steps=80", f"resume={tmp_path / 'a' / 'checkpoint.pt'}")
    assert first.returncode == 0 and "from step 40" in first.stdout
    # The same command line again (as after a crash), asking for more steps: b's own step-80 checkpoint wins.
    more = train(tmp_path, tmp_path / "b", "train.steps=100", f"resume={tmp_path / 'a' / 'checkpoint.pt'}")
    assert more.returncode == 0, more.stderr
    assert "from step 80" in more.stdout and load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 100
    # Already there: say so, train nothing.
    done = train(tmp_path, tmp_path / "b", "train.steps=100")
    assert done.returncode == 0 and "at or past train.steps=100: nothing to train" in done.stdout


def test_newest_checkpoint_prefers_the_run_folder_on_ties(tmp_path):
    def ckpt(name, step):
        return save_checkpoint(tmp_path / name, {"model": {}, "model_config": "m", "step": step})

    given, own = ckpt("given.pt", 50), ckpt("own.pt", 50)
    assert newest_checkpoint(given, own) == own
    ckpt("given.pt", 60)
    assert newest_checkpoint(given, own) == given
    assert newest_checkpoint(None, tmp_path / "none.pt") is None
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        newest_checkpoint(tmp_path / "missing.pt", own)


def _toy_trainer(steps=40, lr=1e-3):
    torch.manual_seed(0)
    return Trainer(
        ScoreMLP(2, hidden=16, blocks=1),
        DSMLoss(sf.VPSDE(), prediction=sf.EpsPrediction()),
        D.toy(sf.problems.eight_gaussians(), 256),
        steps=steps,
        batch_size=16,
        lr=lr,
        warmup=1,
        model_config="toy",
    )


def test_an_older_state_never_overwrites_a_newer_checkpoint(tmp_path):
    ahead = _toy_trainer()
    ahead.fit(steps=20, checkpoint=tmp_path / "c.pt", progress=False)
    before = (tmp_path / "c.pt").read_bytes()
    behind = _toy_trainer()
    behind.fit(steps=5, progress=False)
    with pytest.raises(CheckpointError, match="holds step 20, later than this run's step 5"):
        behind.save(tmp_path / "c.pt")
    assert (tmp_path / "c.pt").read_bytes() == before


def test_a_diverging_run_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _toy_trainer(steps=400)
    path = tmp_path / "c.pt"
    trainer.fit(steps=10, checkpoint=path, progress=False)
    good = path.read_bytes()
    for group in trainer.opt.param_groups:
        group["lr"] = 1e12
    trainer.lr, trainer.grad_clip = 1e12, 0.0
    with pytest.raises(TrainingDiverged, match=r"at step \d+; the last good checkpoint, .*c\.pt \(step 10\), is kept"):
        trainer.fit(checkpoint=path, checkpoint_every=5, log_every=5, progress=False)
    assert path.read_bytes() == good


@pytest.mark.slow
def test_the_train_command_reports_divergence_and_writes_no_results(tmp_path):
    proc = train(tmp_path, tmp_path / "run", "train.steps=200", "train.lr=1e6", "train.grad_clip=0")
    assert proc.returncode != 0 and "the loss became" in proc.stderr and "at step" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "results.json").exists()


# --- The run folder -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_in_the_same_folder_is_refused_and_stale_temporaries_are_removed(tmp_path):
    run = tmp_path / "run"
    lock = lock_run_folder(run, "test")
    proc = train(tmp_path, run, "train.steps=5")
    assert proc.returncode != 0 and f"is using {run} (pid {os.getpid()})" in proc.stderr
    lock.close()
    stale = run / ".checkpoint.pt.0123abcd.tmp"
    stale.write_bytes(b"\0" * 4096)
    proc = train(tmp_path, run, "train.steps=5")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and "removed" in proc.stdout
    other = lock_run_folder(run, "test")  # free again once the run has ended
    with pytest.raises(RunFolderLocked):
        lock_run_folder(run, "test")
    other.close()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for path in (
            atomic_write_bytes(tmp_path / "a.bin", b"x"),
            write_json(tmp_path / "r.json", {"a": 1}),
            save_checkpoint(tmp_path / "c.pt", {"model": {}, "model_config": "m", "step": 0}),
        ):
            assert stat.S_IMODE(path.stat().st_mode) == mode
    finally:
        os.umask(old)


def test_non_finite_results_are_never_written(tmp_path):
    with pytest.raises(NonFiniteResult, match=r"results.csv\[1\].fd is nan"):
        write_csv(tmp_path / "results.csv", [{"fd": 1.0}, {"fd": float("nan")}])
    with pytest.raises(NonFiniteResult, match=r"results.json.rows\[0\].kid is inf"):
        write_json(tmp_path / "results.json", {"rows": [{"kid": float("inf")}]})
    assert list(tmp_path.iterdir()) == []


# --- Commands: NaN weights, sweeps, run folders ----------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    proc = train(tmp, tmp / "run", "train.steps=20")
    assert proc.returncode == 0, proc.stderr
    return tmp / "run" / "checkpoint.pt"


@pytest.mark.slow
def test_nan_weights_are_reported_and_nothing_is_written(tmp_path, toy_checkpoint):
    state = load_checkpoint(toy_checkpoint)
    for key in ("model", "ema"):
        state[key] = {k: torch.full_like(v, float("nan")) for k, v in state[key].items()}
    state.pop("checksum")
    bad = save_checkpoint(tmp_path / "nan.pt", state)
    sample = cli(
        tmp_path,
        "sdeflow.apps.sample",
        f"checkpoint={bad}",
        "n=8",
        "nfe=4",
        "progress=false",
        f"hydra.run.dir={tmp_path / 's'}",
    )
    assert sample.returncode != 0 and "NaN or infinity" in sample.stderr and "step 1 of" in sample.stderr
    assert not list((tmp_path / "s").glob("samples_*")) and not (tmp_path / "s" / "results.json").exists()
    ev = cli(
        tmp_path,
        "sdeflow.apps.evaluate",
        f"checkpoint={bad}",
        "n=16",
        "nfe=4",
        "eval=identity",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'e'}",
    )
    assert ev.returncode != 0 and "NaN or infinity" in ev.stderr and "Traceback" not in ev.stderr
    assert not (tmp_path / "e" / "results.csv").exists()


@pytest.mark.slow
def test_a_training_sweep_with_a_failed_job_exits_non_zero_and_reports(tmp_path):
    proc = cli(tmp_path, "sdeflow.apps.train", "-m", *TOY, "train.steps=10,0", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode != 0 and "1 job(s) of the multirun failed" in proc.stderr
    assert (tmp_path / "sweep" / "0" / "results.json").exists() and (tmp_path / "sweep" / "1" / "error.txt").exists()
    report = cli(tmp_path, "sdeflow.apps.report", str(tmp_path / "sweep"))
    assert report.returncode == 0, report.stderr
    assert "| 0 |" in report.stdout and "steps" in report.stdout and "failed jobs (no results): 1" in report.stdout


@pytest.mark.slow
def test_runs_started_together_get_their_own_folders(tmp_path, toy_checkpoint):
    def sample(_):
        return cli(tmp_path, "sdeflow.apps.sample", f"checkpoint={toy_checkpoint}", "n=4", "nfe=2", "progress=false")

    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(sample, range(2)))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    assert len(list((tmp_path / "outputs").glob("*/*/results.json"))) == 2


@pytest.mark.slow
def test_sampling_through_a_compiled_network_gives_the_eager_samples(tmp_path, toy_checkpoint):
    samples = []
    for i, extra in enumerate([[], ["compile=reduce-overhead"]]):
        proc = cli(
            tmp_path,
            "sdeflow.apps.sample",
            f"checkpoint={toy_checkpoint}",
            "n=8",
            "nfe=6",
            "progress=false",
            *extra,
            f"hydra.run.dir={tmp_path / str(i)}",
        )
        assert proc.returncode == 0, proc.stderr
        samples.append(np.load(next((tmp_path / str(i)).glob("samples_*.npz")))["samples"])
    np.testing.assert_allclose(samples[1], samples[0], rtol=1e-4, atol=1e-5)


def test_a_child_process_does_not_inherit_the_launch_time(monkeypatch):
    monkeypatch.setenv(distributed.LAUNCH_TIME_ENV, "123.0@1")
    assert distributed.launch_time() != 123.0
    assert distributed.launch_time() == distributed.launch_time()


# --- Bad input at the door -------------------------------------------------------------------------------------
BAD_INPUT = [
    ("sdeflow.apps.sample", [], "checkpoint is not set"),
    ("sdeflow.apps.train", ["data=cifar10"], "data.dataset.root is not set"),
    ("sdeflow.apps.sample", ["CKPT", "device=bogus"], "device must be 'cpu', 'cuda'"),
    ("sdeflow.apps.bench.app", ["solver=ddim", "nfe=4", "device=bogus"], "device must be 'cpu', 'cuda'"),
    ("sdeflow.apps.sample", ["CKPT", "n=abc"], "n must be a positive integer, got 'abc'"),
    ("sdeflow.apps.sample", ["CKPT", "batch_size=abc"], "batch_size must be a positive integer, got 'abc'"),
    ("sdeflow.apps.sample", ["CKPT", "nfe=abc"], "nfe must be a positive integer, got 'abc'"),
    ("sdeflow.apps.sample", ["CKPT", "seed=abc"], "seed must be a non-negative integer, got 'abc'"),
    ("sdeflow.apps.evaluate", ["CKPT", "nfe=10.7"], "nfe must be a positive integer, got 10.7"),
    ("sdeflow.apps.sample", ["CKPT", "use_ema=maybe"], "use_ema must be true or false, got 'maybe'"),
    (
        "sdeflow.apps.sample",
        ["CKPT", "compile=fast"],
        "compile must be null (no compilation) or one of torch.compile's modes",
    ),
    ("sdeflow.apps.train", ["data=digits", "model=mlp"], "model=mlp does not fit data=digits"),
    ("sdeflow.apps.train", ["data=toy", "model=ncsnpp_tiny"], "model=ncsnpp_tiny does not fit data=toy"),
    ("sdeflow.apps.sample", ["checkpoint=EMPTY"], "is empty or cut short"),
    (
        "sdeflow.apps.sample",
        ["CKPT", "solver=dpmpp_2m", "solver.dpmpp_2m.order=7"],
        "solver.dpmpp_2m: DPMSolverPP supports order 2 or 3, got 7",
    ),
    (
        "sdeflow.apps.sample",
        ["CKPT", "solver=dpmpp_2m", "solver.dpmpp_2m.lower_order_final=maybe"],
        "solver.dpmpp_2m.lower_order_final must be true or false, got 'maybe'",
    ),
    (
        "sdeflow.apps.sample",
        ["CKPT", "solver.auto.choices.2.0=1"],
        "solver.auto: choices' budget bounds must be increasing positive integers",
    ),
    (
        "sdeflow.apps.sample",
        ["CKPT", "solver=all"],
        "solver.unipc_2_bh2_jump: AnalyticJump needs the data's mean and covariance",
    ),
    (
        "sdeflow.apps.bench.app",
        ["solver=ddim", "nfe=4", "+timesteps.t_max=5.0", "n_trajectory=4", "n_distribution=16"],
        "grid bounds must satisfy eps <= t_min < t_max <= T",
    ),
    (
        "sdeflow.apps.bench.app",
        ["solver=dpm_solver_3", "nfe=2", "n_trajectory=4", "n_distribution=16"],
        "no solver ran at any budget",
    ),
]
if not torch.cuda.is_available():
    BAD_INPUT.append(("sdeflow.apps.sample", ["CKPT", "device=cuda"], "no usable CUDA device"))


@pytest.mark.slow
def test_bad_input_gets_one_clear_line(tmp_path, toy_checkpoint):
    (tmp_path / "empty.pt").write_bytes(b"")

    def run(case):
        i, (module, args, message) = case
        args = [
            a.replace("CKPT", f"checkpoint={toy_checkpoint}").replace("EMPTY", str(tmp_path / "empty.pt")) for a in args
        ]
        return cli(tmp_path, module, *args, "progress=false", f"hydra.run.dir={tmp_path / str(i)}"), message

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, enumerate(BAD_INPUT)))
    for (proc, message), (module, args, _) in zip(results, BAD_INPUT):
        assert proc.returncode != 0, (module, args)
        assert message in proc.stderr, (module, args, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr, (module, args, proc.stderr[-2000:])
        lines = [line for line in proc.stderr.splitlines() if line.startswith("sdeflow-")]
        assert len(lines) == 1, (module, args, proc.stderr[-500:])


def test_empty_inception_weights_get_one_clear_line(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="empty, cut short or not a torch weights file"):
        load_inception(str(tmp_path / "w.pth"))


# --- Packaging -------------------------------------------------------------------------------------------------
def test_torch_has_a_lower_bound_only():
    # The requirement named exactly torch (not torchdiffeq, torchsde), in any extra.
    torch_req = [r for r in requires("sdeflow") if re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] == "torch"]
    assert torch_req and all("<" not in r and "==" not in r and "~=" not in r for r in torch_req), torch_req
    assert ">=" in torch_req[0]
