"""Data parallelism on the CPU with gloo and 2 processes: DDP training, sharded sampling and FID, torchrun, submitit."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import sdeflow as sf
from sdeflow.core import distributed
from sdeflow.eval.stats import FeatureStats
from sdeflow.nets import ScoreMLP
from sdeflow.samplers.generate import generate
from sdeflow.training.data import Dataset
from sdeflow.training.losses import DSMLoss
from sdeflow.training.trainer import Trainer

from helpers import ENV, compose_config, exact_score

# End-to-end: real processes and notebooks; in the slow tier.
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, *args, world: int = 2):
    """Run fn(*args) in `world` fresh processes that join one gloo group through `distributed.launch()`."""
    mp.start_processes(_entry, args=(world, _free_port(), fn, args), nprocs=world, start_method="spawn", join=True)


def _entry(rank, world, port, fn, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    with distributed.session() as w:
        assert (w.rank, w.size) == (rank, world)
        fn(*args)


# Training ----------------------------------------------------------------------------------------


def _trainer(steps=6):
    torch.manual_seed(0)  # the same initial weights in every process
    sde = sf.VPSDE()
    data = Dataset(sf.problems.eight_gaussians().sample(512, torch.Generator().manual_seed(0)).float(), name="eight")
    net = ScoreMLP(dim=2, hidden=64, blocks=2)
    return Trainer(net, DSMLoss(sde), data, steps=steps, batch_size=8, lr=1e-2, warmup=2, ema_decay=0.9)


def _weights(trainer):
    return {"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict()}


def _ddp_worker(tmp):
    rank = distributed.world().rank
    fresh = _trainer()
    fresh.fit(steps=3, checkpoint=tmp / "ddp_step3.pt", progress=False)
    losses = fresh.fit(progress=False)
    torch.save({**_weights(fresh), "losses": losses}, tmp / f"ddp_rank{rank}.pt")
    resumed = _trainer()
    resumed.resume(tmp / "single_step3.pt")  # written by one process, continued by two
    resumed.fit(progress=False)
    torch.save(_weights(resumed), tmp / f"resumed_rank{rank}.pt")


def _close(a: dict, b: dict, exact=False):
    for part in ("model", "ema"):
        for key in a[part]:
            if exact:
                assert torch.equal(a[part][key], b[part][key]), (part, key)
            else:
                torch.testing.assert_close(a[part][key], b[part][key], rtol=1e-5, atol=1e-6, msg=f"{part}.{key}")


def test_ddp_training_matches_one_process_on_the_combined_batch_and_resumes_across_world_sizes(tmp_path):
    single = _trainer()
    single.fit(steps=3, checkpoint=tmp_path / "single_step3.pt", progress=False)
    single_losses = single.fit(progress=False)
    _spawn(_ddp_worker, tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"ddp_rank{r}.pt", weights_only=True) for r in (0, 1))
    # Gradient all-reduce keeps the ranks in lockstep, bit for bit.
    _close(rank0, rank1, exact=True)
    # Two ranks of 4 samples follow the single process's 8-sample batches: same data, noise and update.
    _close(rank0, _weights(single))
    torch.testing.assert_close(torch.tensor(rank0["losses"]), torch.tensor(single_losses[-3:]), rtol=1e-5, atol=1e-6)
    # A one-process checkpoint continued on two ranks, and a two-rank checkpoint continued on one.
    _close(
        torch.load(tmp_path / "resumed_rank0.pt", weights_only=True),
        torch.load(tmp_path / "resumed_rank1.pt", weights_only=True),
        exact=True,
    )
    _close(torch.load(tmp_path / "resumed_rank0.pt", weights_only=True), _weights(single))
    back = _trainer()
    back.resume(tmp_path / "ddp_step3.pt")
    back.fit(progress=False)
    _close(_weights(back), _weights(single))
    # The test has teeth: a different step count moves the weights well past the tolerance.
    other = _trainer(steps=5)
    other.fit(progress=False)
    flat = lambda t: torch.cat([p.flatten() for p in t.model.parameters()])  # noqa: E731
    assert (flat(other) - flat(single)).abs().max() > 1e-3


def test_batch_must_split_evenly_over_ranks(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2))
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        Trainer(ScoreMLP(dim=2), DSMLoss(sf.VPSDE()), None, batch_size=7)


# Sampling and FID --------------------------------------------------------------------------------

N, SEED = 37, 5  # an odd n: the shards differ in size


def _sampling_setup():
    sde, gm = sf.VPSDE(), sf.problems.eight_gaussians()
    score = exact_score(gm, sde)
    ref = FeatureStats(2).update(gm.sample(4000, torch.Generator().manual_seed(1)))
    return sde, score, ref


SOLVERS = {"em": lambda: sf.PCSampler(sf.EulerMaruyama()), "dpmpp": lambda: sf.DPMSolverPP(order=2)}


def _sharded_worker(tmp, batch_size):
    sde, score, ref = _sampling_setup()
    out = {}
    for name, make in SOLVERS.items():
        gen = generate(
            score, sde, make(), N, (2,), nfe=12, grid=sf.UniformGrid(), seed=SEED, batch_size=batch_size, progress=False
        )
        stats = FeatureStats(2).update(gen.samples).all_reduce()
        out[name] = {
            "samples": distributed.gather_rows(gen.samples),
            "fd": stats.frechet(ref),
            "n": stats.n,
            "nfe": gen.nfe,
            "indices": [gen.indices.start, gen.indices.stop],
        }
    torch.save(out, tmp / f"sharded_rank{distributed.world().rank}.pt")


def test_sharded_sampling_gives_the_samples_and_frechet_distance_of_one_process(tmp_path):
    _spawn(_sharded_worker, tmp_path, 4)
    sde, score, ref = _sampling_setup()
    rank0, rank1 = (torch.load(tmp_path / f"sharded_rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, make in SOLVERS.items():
        one = generate(
            score, sde, make(), N, (2,), nfe=12, grid=sf.UniformGrid(), seed=SEED, batch_size=4, progress=False
        )
        # 10 batches of 4 (the last of 1): 5 whole batches per rank.
        assert rank0[name]["indices"] == [0, 20] and rank1[name]["indices"] == [20, 37]
        assert rank1[name]["samples"] is None
        assert torch.equal(rank0[name]["samples"], one.samples), name
        assert rank0[name]["n"] == rank1[name]["n"] == N
        assert rank0[name]["nfe"] == rank1[name]["nfe"] == one.nfe
        fd_one = FeatureStats(2).update(one.samples).frechet(ref)
        # Sums over ranks are added in another order than in one pass: equal to rounding.
        assert rank0[name]["fd"] == pytest.approx(fd_one, rel=1e-9) and rank1[name]["fd"] == pytest.approx(
            fd_one, rel=1e-9
        )
        assert fd_one > 1e-3  # a distance that rounding alone could not match by chance


def test_shards_cover_every_index_once():
    for n in (1, 2, 7, 64, 101):
        for size in (1, 2, 3, 8):
            for unit in (1, 4, 16):
                blocks = [distributed.shard(n, distributed.World(r, size), unit) for r in range(size)]
                assert [i for b in blocks for i in b] == list(range(n))
                assert all(b.start % unit == 0 for b in blocks if len(b))  # whole batches
                units = [-(-len(b) // unit) for b in blocks]
                assert max(units) - min(units) <= 1  # balanced to one batch


# Console scripts under torchrun and submitit ------------------------------------------------------

SCRIPTS = Path(sys.executable).parent


def _run(cmd, cwd):
    proc = subprocess.run(
        cmd, cwd=cwd, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


TRAIN = [
    "data=toy",
    "model=mlp",
    "train.steps=40",
    "train.batch_size=16",
    "sample.every=0",
    "sample.n=16",
    "progress=false",
]


def test_torchrun_train_then_eval(tmp_path):
    # The console scripts themselves, as the README runs them.
    torchrun = [str(SCRIPTS / "torchrun"), "--nproc_per_node=2", "--master_port", str(_free_port()), "--no-python"]
    _run([*torchrun, str(SCRIPTS / "sdeflow-train"), *TRAIN], tmp_path)
    runs = list((tmp_path / "outputs").glob("*/*"))
    assert len(runs) == 1, runs  # one output directory for both ranks
    run = runs[0]
    result = json.loads((run / "results.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 40
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "checkpoint.pt").is_file()
    torchrun[3] = str(_free_port())
    evaluate = [
        str(SCRIPTS / "sdeflow-eval"),
        f"checkpoint={run / 'checkpoint.pt'}",
        "eval=identity",
        "n=101",
        "batch_size=16",
        "metrics=[fd]",
        "progress=false",
    ]
    _run([*torchrun, *evaluate, f"hydra.run.dir={tmp_path / 'eval2'}"], tmp_path)
    _run([*evaluate, f"hydra.run.dir={tmp_path / 'eval1'}"], tmp_path)
    two, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("eval2", "eval1"))
    assert two["world_size"] == 2 and one["world_size"] == 1
    # The same batches through the same network: the same samples; the float64 sums differ in order only.
    assert two["rows"][1]["fd"] == pytest.approx(one["rows"][1]["fd"], rel=1e-12)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="on a SLURM login node this would submit real jobs")
def test_submitit_local_launcher_runs_two_tasks_as_one_process_group(tmp_path):
    _run(
        [
            str(SCRIPTS / "sdeflow-train"),
            "-m",
            "hydra/launcher=local_ddp",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            *TRAIN,
        ],
        tmp_path,
    )
    result = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 40
    assert not (tmp_path / "sweep" / "0" / "error.txt").exists()


def test_slurm_ddp_launcher_asks_for_one_task_per_gpu():
    import sdeflow.apps.train  # noqa: F401  (registers the schemas and resolvers its config uses)

    cfg = compose_config(
        "train",
        "hydra/launcher=slurm_ddp",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=4",
        return_hydra_config=True,
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)


def test_which_environments_start_a_process_group(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SUBMITIT_EXECUTOR", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert distributed._env_world() is None  # a plain process
    monkeypatch.setenv("SLURM_NTASKS", "8")  # inside an sbatch script, not a task of a group
    assert distributed._env_world() is None and not distributed.launch()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_PORT", "1234")
    world, _, port = distributed._env_world()
    assert (world.rank, world.size, port) == (1, 4, "1234")
    assert distributed.env_rank() == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed._env_world() is None
