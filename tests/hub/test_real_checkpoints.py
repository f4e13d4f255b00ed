r"""Opt-in checks on real published checkpoints, which are never downloaded: give their local paths to run them.

    SDEFLOW_EDM_PICKLE=edm-cifar10-32x32-uncond-vp.pkl SDEFLOW_DIFFUSERS_FOLDER=ddpm-cifar10-32 \
        pytest tests/test_real_checkpoints.py
    SDEFLOW_SCORE_SDE_CHECKPOINT=checkpoint_8.pth SDEFLOW_SCORE_SDE_FORMAT=score_sde_vp_ddpmpp_deep_continuous \
        pytest ...
    SDEFLOW_ADM_CHECKPOINT=64x64_diffusion.pt SDEFLOW_ADM_FORMAT=adm_64x64_diffusion pytest ...

A trained image model denoises: from a lightly noised sample, its x0 estimate is nearer the sample than
the noised input was; and its samples lie in the data range [-1, 1] up to a small overshoot.
"""

import os

import pytest
import torch
from hydra.utils import instantiate

import sdeflow as sf
from sdeflow.hub import load_diffusers, load_edm

from helpers import checkpoint_format

EDM = os.environ.get("SDEFLOW_EDM_PICKLE")
DIFFUSERS = os.environ.get("SDEFLOW_DIFFUSERS_FOLDER")
SCORE_SDE = os.environ.get("SDEFLOW_SCORE_SDE_CHECKPOINT")
ADM = os.environ.get("SDEFLOW_ADM_CHECKPOINT")


def check_trained(score, sde, shape, solver, grid, nfe):
    out = sf.sample(score, sde, solver, (8, *shape), nfe=nfe, grid=grid, seed=0)
    x = out.samples
    assert bool(torch.isfinite(x).all())
    assert x.abs().quantile(0.99).item() < 1.5, "samples far outside the data range [-1, 1]"
    t = torch.full((8,), 0.1 * sde.T + 0.9 * sde.eps) if sde.T < 2 else torch.full((8,), 0.1)
    alpha, sigma = sde.alpha(t)[:, None, None, None], sde.sigma(t)[:, None, None, None]
    noised = alpha * x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x0 = score.x0(noised, t)
    assert (x0 - x).pow(2).mean() < (noised / alpha - x).pow(2).mean(), "the model does not denoise its own samples"


@pytest.mark.skipif(not EDM, reason="set SDEFLOW_EDM_PICKLE=<an EDM network pickle> to run on a real checkpoint")
def test_a_real_edm_pickle():
    model = load_edm(EDM)
    score = model.score
    if model.label_dim:
        score = score.condition(y=torch.arange(8) % model.label_dim)
    check_trained(score, model.sde, model.shape, sf.EDMHeun(denoise=True), sf.KarrasGrid(), 35)


@pytest.mark.skipif(
    not DIFFUSERS, reason="set SDEFLOW_DIFFUSERS_FOLDER=<a diffusers UNet2DModel folder> to run on a real checkpoint"
)
def test_a_real_diffusers_folder():
    model = load_diffusers(DIFFUSERS)
    check_trained(model.score, model.sde, model.shape, sf.DPMSolverPP(2), sf.LogSNRGrid(), 20)


@pytest.mark.skipif(
    not SCORE_SDE,
    reason="set SDEFLOW_SCORE_SDE_CHECKPOINT=<checkpoint_*.pth> (and SDEFLOW_SCORE_SDE_FORMAT=<its "
    "conf/checkpoint_format entry>) to run on a real checkpoint",
)
def test_a_real_score_sde_checkpoint():
    fmt = instantiate(
        checkpoint_format(os.environ.get("SDEFLOW_SCORE_SDE_FORMAT", "score_sde_vp_ddpmpp_deep_continuous"))
    )
    model = fmt.load(SCORE_SDE)
    check_trained(model.score, model.sde, model.shape, sf.DPMSolverPP(2), sf.LogSNRGrid(), 20)


@pytest.mark.skipif(
    not ADM,
    reason="set SDEFLOW_ADM_CHECKPOINT=<a guided-diffusion model .pt> (and SDEFLOW_ADM_FORMAT=<its "
    "conf/checkpoint_format entry>) to run on a real checkpoint",
)
def test_a_real_guided_diffusion_model():
    model = instantiate(checkpoint_format(os.environ.get("SDEFLOW_ADM_FORMAT", "adm_64x64_diffusion"))).load(ADM)
    score = model.score
    if model.label_dim:
        score = score.condition(y=torch.arange(8) * 100)
    check_trained(score, model.sde, model.shape, sf.DPMSolverPP(2), sf.LogSNRGrid(), 20)
