"""Inverse problems and guidance from the command line and in the benchmark: observation files, per-sample
observations, method binding, `sdeflow-bench`'s conditional problems and `sdeflow-sample inverse=...`."""

import json

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.apps.bench import runner
from sdeflow.conditioning.inverse.observation import (
    ObservationError,
    inpainting_box,
    inpainting_mask,
    measure,
    read_images,
)
from sdeflow.eval.metrics import SlicedWasserstein, rms_error
from sdeflow.problems import GuidedProblem, InpaintingProblem, gaussian_data, linear_posterior
from sdeflow.samplers.generate import generate
from sdeflow.training import data as D

from helpers import cli, exact_score

SDE = sf.VPSDE()


# --- Observation files ---------------------------------------------------------------------------------------
def test_images_and_masks_read_from_png_and_arrays(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(levels).save(tmp_path / "digit.png")
    x = read_images(tmp_path / "digit.png", (1, 8, 8), centered=True)
    torch.testing.assert_close(x, torch.from_numpy(levels / 255.0 * 2 - 1)[None, None])
    rgb = rng.random((5, 3, 4, 4))
    np.save(tmp_path / "rgb.npy", rgb)
    torch.testing.assert_close(read_images(tmp_path / "rgb.npy", (3, 4, 4), centered=False), torch.from_numpy(rgb))
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :3] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    op = inpainting_mask((1, 8, 8), str(tmp_path / "mask.png"))
    assert op.mask.shape == (1, 1, 8, 8) and int(op.mask.sum()) == 24 and bool((op.mask[..., :3] == 1).all())


def test_bad_observation_files_are_refused_with_one_clear_line(tmp_path):
    np.save(tmp_path / "big.npy", np.full((1, 8, 8), 2.0))
    with pytest.raises(ObservationError, match=r"must lie in \[0, 1\]"):
        read_images(tmp_path / "big.npy", (1, 8, 8))
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5, 5)))
    with pytest.raises(ObservationError, match=r"samples are \(1, 8, 8\)"):
        read_images(tmp_path / "wrong.npy", (1, 8, 8))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ObservationError, match="not a readable"):  # pickles are code, and refused
        read_images(tmp_path / "objects.npy", (1, 8, 8))
    (tmp_path / "x.txt").write_text("0")
    with pytest.raises(ObservationError, match="use .png, .npy or .npz"):
        read_images(tmp_path / "x.txt", (1, 8, 8))
    with pytest.raises(ObservationError, match="covers no pixel"):
        inpainting_box((1, 8, 8), (0.0, 0.0, 0.01, 0.01))


def test_a_box_mask_leaves_the_box_unobserved():
    op = inpainting_box((1, 8, 8), (0.25, 0.5, 0.75, 1.0))
    expected = torch.ones(8, 8, dtype=torch.float64)
    expected[2:6, 4:8] = 0
    torch.testing.assert_close(op.mask[0, 0], expected)


def test_measurement_noise_is_per_sample_and_on_the_observed_range():
    op = inpainting_box((1, 8, 8))
    images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole = measure(op, images, 0.1, seed=3)
    parts = torch.cat([measure(op, images[:4], 0.1, seed=3, offset=0), measure(op, images[4:], 0.1, seed=3, offset=4)])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    assert bool((whole * (1 - op.mask) == 0).all())  # nothing observed off the mask, noise included
    noise = (whole - op.A(images))[op.mask.expand_as(whole) == 1]
    assert abs(float(noise.std()) - 0.1) < 0.01


# --- Methods bound batch by batch --------------------------------------------------------------------------
def test_repaint_refuses_a_multistep_solver_with_its_own_error():
    score = exact_score(sf.GaussianMixture.random(dim=4, seed=0), SDE)
    op, y = sf.inverse.Inpainting(torch.tensor([1.0, 0, 0, 0])), torch.zeros(3, 4)
    with pytest.raises(sf.IncompatibleSampler, match="one-step"):
        sf.inverse.RePaint(resamples=2).bind(score, SDE, sf.DPMSolverPP(2), op, y, 0.1)
    bound = sf.inverse.RePaint(resamples=3).bind(score, SDE, sf.DDIM(), op, y, 0.1)
    # RePaint drives DDIM, re-noising between resamples: a stochastic sampler at three times DDIM's cost per step.
    assert bound.sampler.nfe_per_step == 3 and bound.sampler.stochastic and bound.hook is None


@pytest.mark.parametrize(
    "method",
    [sf.inverse.Replacement(), sf.inverse.RePaint(resamples=2), sf.inverse.DPS(), sf.inverse.PiGDM(data_var=0.3)],
    ids=["replacement", "repaint", "dps", "pigdm"],
)
def test_sample_i_of_an_inverse_task_does_not_depend_on_the_batch_size(method):
    problem = InpaintingProblem.bimodal(dim=6)
    score = exact_score(problem, SDE)
    inverse = sf.inverse.Observed(method, problem.operator, problem.observation(10), problem.noise_std, seed=4)

    runs = [
        generate(
            score,
            SDE,
            sf.PCSampler(sf.EulerMaruyama()),
            10,
            (6,),
            nfe=8,
            grid=sf.LogSNRGrid(),
            seed=1,
            batch_size=bs,
            progress=False,
            inverse=inverse,
        )
        for bs in (3, 10)
    ]
    torch.testing.assert_close(runs[0].samples, runs[1].samples, rtol=1e-5, atol=1e-6)
    assert runs[0].nfe == 8 and runs[0].backwards == (
        8 if isinstance(method, (sf.inverse.DPS, sf.inverse.PiGDM)) else 0
    )


def test_pigdm_with_a_general_matrix_matches_the_exact_linear_posterior():
    # Isotropic Gaussian data: x0 | x_t is Gaussian with variance r_t^2 I, so PiGDM's likelihood is exact for
    # any A. The truth is `linear_posterior` (full covariance). 20,000 samples, 300 DDIM steps: mean within 0.01,
    # covariance within 0.004 entrywise, the variance along each observed direction (rows of A) within 10%
    # (measured: 0.003, 0.001, 5%).
    c, d, n = 0.3**2, 6, 20_000
    data = gaussian_data(0.1, c**0.5, d)
    A = torch.randn(3, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y_obs = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64)
    truth = linear_posterior(data, A, y_obs, 0.1)
    op, base = sf.inverse.MatrixOperator(A), exact_score(data, SDE)

    def run(method):
        bound = method.bind(base, SDE, sf.DDIM(), op, y_obs.expand(n, 3), 0.1)
        x = bound.sample(SDE, (n, d), steps=300, grid=sf.LogSNRGrid(), seed=2, dtype=torch.float64).samples
        cov = torch.cov(x.T)
        along = torch.diag(A @ cov @ A.T) / torch.diag(A @ truth.covs[0] @ A.T)
        return (x.mean(0) - truth.means[0]).abs().max(), (cov - truth.covs[0]).abs().max(), along

    mean_err, cov_err, ratio = run(sf.inverse.PiGDM(data_var=c))
    assert mean_err < 0.01 and cov_err < 0.004 and ((ratio - 1).abs() < 0.1).all(), (mean_err, cov_err, ratio)
    # DPS ignores r_t^2 and collapses along the observed directions (measured: variance 0.1-4% of the truth's,
    # mean 0.06 off): a known bias, documented rather than hidden.
    mean_err, _, ratio = run(sf.inverse.DPS())
    assert mean_err > 0.03 and (ratio < 0.5).all(), (mean_err, ratio)


# --- The benchmark's conditional problems -------------------------------------------------------------------
def test_the_guided_problem_scores_solvers_against_the_exact_guided_ode():
    # The solver runs the library's classifier-free guidance wrapper; the reference solves the exact guided ODE
    # from LabelledMixture's closed form: two independent routes to one answer, closer with more steps.
    problem = GuidedProblem.random(w=3.0, dim=8, components=4, classes=2)
    x_T = SDE.prior_sampling((64, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = problem.ode_reference(SDE, x_T)
    cfg = sf.ClassifierFreeGuidance(w=3.0).bind(sf.ScoreFunction(problem.problem.model(SDE), SDE), problem.labels(64))
    errors = [
        float(
            rms_error(
                sf.UniPC(2).sample(cfg, SDE, x_T, sf.UniPC(2).plan(SDE, sf.LogSNRGrid(), nfe=n)).samples, ref
            ).median()
        )
        for n in (10, 40)
    ]
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 8, errors
    assert problem.sample(10, torch.Generator()) is None  # no closed-form law of the guided SDE at w != 0
    rows, bench = runner.run(
        problem,
        SDE,
        {"ddim": sf.DDIM(), "em": sf.PCSampler(sf.EulerMaruyama())},
        sf.LogSNRGrid(),
        [10],
        n_trajectory=16,
        n_distribution=64,
        n_directions=16,
        progress=False,
    )
    by = {r["solver"]: r for r in rows}
    assert by["ddim"]["rms_median"] > 0 and "no exact samples" in by["em"]["skipped"]


def test_guided_problem_at_w0_samples_each_class_and_the_sde_reaches_them():
    problem = GuidedProblem.random(w=0.0, dim=4, components=4, classes=2, seed=1)
    rows, bench = runner.run(
        problem,
        SDE,
        {"em": sf.PCSampler(sf.EulerMaruyama())},
        sf.LogSNRGrid(),
        [200],
        n_trajectory=8,
        n_distribution=4000,
        n_directions=64,
        progress=False,
    )
    # Sample i has class i mod 2: the exact set's even rows are class 0's components.
    labels = problem.problem.labels[problem.problem.mixture.assign(bench.exact)]
    assert bool((labels == torch.arange(4000) % 2).float().mean() > 0.99)
    assert rows[0]["sw2"] < 3 * bench.floor_sw2, (rows[0], bench.floor_sw2)


def test_the_inpainting_problem_scores_every_row_by_distance_and_skips_what_a_method_cannot_drive():
    problem = InpaintingProblem.bimodal()
    solvers = {"ddim": sf.DDIM(), "dpmpp_2m": sf.DPMSolverPP(2), "em": sf.PCSampler(sf.EulerMaruyama())}
    rows, bench = runner.run(
        problem,
        SDE,
        solvers,
        sf.LogSNRGrid(),
        [20],
        n_trajectory=8,
        n_distribution=2000,
        n_directions=64,
        progress=False,
        inverse=sf.inverse.RePaint(resamples=2),
    )
    by = {r["solver"]: r for r in rows}
    assert "one-step" in by["dpmpp_2m"]["skipped"]
    assert (
        by["ddim"]["kind"] == "stochastic" and by["ddim"]["nfe"] == 20 and by["ddim"]["steps"] == 10
    )  # RePaint re-noises
    prior = SlicedWasserstein(bench.exact, 64, torch.Generator().manual_seed(0))(
        problem.mixture.sample(2000, torch.Generator())
    )
    assert by["em"]["sw2"] < 0.8 * prior  # conditioned: nearer the posterior than the prior is
    # DPS weighted far too strongly: iterates beyond 1000 (alpha_t + sigma_t), a diverged row.
    rows, _ = runner.run(
        problem,
        SDE,
        {"em": sf.PCSampler(sf.EulerMaruyama())},
        sf.LogSNRGrid(),
        [10],
        n_trajectory=8,
        n_distribution=500,
        n_directions=16,
        progress=False,
        inverse=sf.inverse.DPS(zeta=10.0),
    )
    assert rows[0]["diverged"] and "iterates diverged at step" in rows[0]["error"], rows
    with pytest.raises(ValueError, match="is an inverse problem"):
        runner.run(problem, SDE, solvers, sf.LogSNRGrid(), [20], n_trajectory=8, n_distribution=100, progress=False)
    with pytest.raises(ValueError, match="needs an inverse problem"):
        runner.run(
            sf.GaussianMixture.random(dim=4),
            SDE,
            solvers,
            sf.LogSNRGrid(),
            [20],
            n_trajectory=8,
            n_distribution=100,
            progress=False,
            inverse=sf.inverse.DPS(),
        )


def test_the_bench_command_runs_inverse_methods_and_guided_sweeps(tmp_path):
    common = ["nfe=[10]", "n_trajectory=8", "n_distribution=500", "n_directions=32", "progress=false"]
    proc = cli(
        tmp_path,
        "sdeflow.apps.bench.app",
        "problem=inpainting_gmm",
        "inverse=dps",
        "solver=[euler_maruyama,ddim]",
        *common,
        f"hydra.run.dir={tmp_path / 'inv'}",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "inv" / "results.json").read_text())["rows"]
    assert [r["backwards"] for r in rows] == [10, 10] and all(r["sw2"] > 0 for r in rows)
    sweep = cli(
        tmp_path,
        "sdeflow.apps.bench.app",
        "-m",
        "problem=guided_gmm",
        "problem.w=0,2",
        "solver=[ddim]",
        *common,
        f"hydra.sweep.dir={tmp_path / 'sw'}",
    )
    assert sweep.returncode == 0, sweep.stderr
    report = cli(tmp_path, "sdeflow.apps.report", str(tmp_path / "sw"))
    assert report.returncode == 0 and "problem.w=2" in report.stdout
    bad = cli(
        tmp_path,
        "sdeflow.apps.bench.app",
        "problem=inpainting_gmm",
        "solver=[ddim]",
        *common,
        f"hydra.run.dir={tmp_path / 'bad'}",
    )
    assert bad.returncode != 0 and "inverse=replacement, repaint, dps or pigdm" in bad.stderr.strip().splitlines()[-1]


# --- sdeflow-sample inverse=... -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("digits")
    proc = cli(
        tmp,
        "sdeflow.apps.train",
        "data=digits",
        "model=ncsnpp_tiny",
        "model.net.nf=8",
        "train.steps=5",
        "train.batch_size=8",
        "sample.every=0",
        "sample.n=4",
        "sample.nfe=2",
        "progress=false",
        f"hydra.run.dir={tmp / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / "run" / "checkpoint.pt"


def test_the_sample_command_inpaints_from_files_and_refuses_mismatches(tmp_path, digits_checkpoint):
    from PIL import Image

    images = np.random.default_rng(1).random((3, 1, 8, 8))
    np.save(tmp_path / "x.npy", images)
    mask = np.full((8, 8), 255, dtype=np.uint8)
    mask[2:6, 2:6] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = [f"checkpoint={digits_checkpoint}", "n=5", "nfe=6", "batch_size=2", "progress=false"]
    proc = cli(
        tmp_path,
        "sdeflow.apps.sample",
        *common,
        "solver=euler_maruyama",
        "inverse=replacement",
        "operator=inpainting",
        f"operator.mask={tmp_path / 'mask.png'}",
        f"observation.images={tmp_path / 'x.npy'}",
        f"hydra.run.dir={tmp_path / 'a'}",
    )
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "a" / "samples_euler_maruyama.npz")
    m = (mask > 0).astype(np.float64)
    originals = images[np.arange(5) % 3] * 2 - 1  # sample i observes image i mod 3
    np.testing.assert_allclose(out["originals"], originals, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["observations"], originals * m, rtol=1e-6, atol=1e-6)
    # Replacement keeps the observed pixels at y, up to the noise level of the last grid time.
    assert np.abs((out["samples"] - out["observations"]) * m).max() < 0.05
    row = json.loads((tmp_path / "a" / "results.json").read_text())["rows"][0]
    assert (
        row["nfe"] == 6
        and row["backwards"] == 0
        and row["residual_rms"] < 0.05
        and row["operator"].startswith("Inpainting")
    )
    refused = cli(
        tmp_path,
        "sdeflow.apps.sample",
        *common,
        "solver=[ddim,dpmpp_2m]",
        "inverse=repaint",
        "operator=inpainting_box",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    assert refused.returncode != 0 and "one-step" in refused.stderr and not list((tmp_path / "b").glob("samples_*"))
    colour = cli(
        tmp_path,
        "sdeflow.apps.sample",
        *common,
        "inverse=dps",
        "operator=colorization",
        f"hydra.run.dir={tmp_path / 'c'}",
    )
    assert colour.returncode != 0 and "colorisation needs a model of RGB images" in colour.stderr


def test_photo_patches_are_rgb_data_that_ship_with_scikit_learn():
    data = D.photo_patches(size=8, stride=4)
    assert data.shape == (3, 8, 8) and len(data) == 2 * ((427 - 8) // 4 + 1) * ((640 - 8) // 4 + 1)
    assert 0 <= float(data.data.min()) and float(data.data.max()) <= 1 and float(data.data.std()) > 0.1


def test_autoguidance_by_the_model_itself_is_plain_sampling_at_twice_the_forwards(tmp_path, digits_checkpoint):
    # (1 + w) s - w s = s: the guided samples equal the unguided ones to float32 rounding, at two forwards per NFE.
    common = [f"checkpoint={digits_checkpoint}", "n=4", "nfe=5", "solver=ddim", "progress=false"]
    plain = cli(tmp_path, "sdeflow.apps.sample", *common, f"hydra.run.dir={tmp_path / 'a'}")
    auto = cli(
        tmp_path,
        "sdeflow.apps.sample",
        *common,
        "guidance=autoguidance",
        f"guidance.checkpoint={digits_checkpoint}",
        "guidance.w=2",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    assert plain.returncode == 0 and auto.returncode == 0, (plain.stderr, auto.stderr)
    a, b = (np.load(tmp_path / run / "samples_ddim.npz") for run in ("a", "b"))
    np.testing.assert_allclose(b["samples"], a["samples"], rtol=0, atol=1e-4)
    assert int(a["forwards"]) == 5 and int(b["forwards"]) == 10 and int(b["nfe"]) == 5
    cfg = cli(tmp_path, "sdeflow.apps.sample", *common, "guidance.w=2", f"hydra.run.dir={tmp_path / 'c'}")
    assert cfg.returncode != 0 and "needs a class-conditional model" in cfg.stderr
