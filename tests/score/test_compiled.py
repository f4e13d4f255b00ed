"""sdeflow.Compiled: the network behind torch.compile gives the eager samples, and survives CUDA graphs' buffer
reuse."""

import pytest
import torch
from torch import nn

import sdeflow as sf
from sdeflow.nets import ScoreMLP


def net():
    torch.manual_seed(0)
    return ScoreMLP(dim=4, hidden=32).eval()


def draw(model, solver, prediction=sf.EpsPrediction()):
    sde = sf.VPSDE()
    return sf.sample(sf.ScoreFunction(model, sde, prediction), sde, solver, (16, 4), nfe=8, seed=3).samples


def test_a_traced_network_gives_the_eager_samples_and_saves_as_the_network():
    eager = net()
    compiled = sf.Compiled(eager, "default", backend="aot_eager")
    torch.testing.assert_close(draw(compiled, sf.DPMSolverPP(3)), draw(eager, sf.DPMSolverPP(3)), rtol=1e-6, atol=1e-6)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    assert compiled.dim == eager.dim == 4  # attributes the apps read (label_dim, ...) are the network's


class OneBuffer(nn.Module):
    """What a CUDA graph does to its outputs: every call writes into the same memory."""

    def __init__(self, model):
        super().__init__()
        self.model, self.out = model, None

    def forward(self, x, t):
        y = self.model(x, t)
        self.out = torch.empty_like(y) if self.out is None else self.out
        return self.out.copy_(y)


# Multistep solvers whose history holds the network's output itself: x0 histories of an x0 model, eps of an eps model.
HISTORIES = [
    (sf.DPMSolverPP(3), sf.X0Prediction()),
    (sf.UniPC(3), sf.X0Prediction()),
    (sf.IPNDM(), sf.EpsPrediction()),
    (sf.DEIS(3), sf.EpsPrediction()),
]


@pytest.mark.parametrize("solver,prediction", HISTORIES, ids=lambda v: type(v).__name__)
def test_multistep_histories_survive_output_buffer_reuse(solver, prediction):
    eager = net()
    truth = draw(eager, solver, prediction)
    assert not torch.allclose(draw(OneBuffer(eager), solver, prediction), truth, rtol=1e-3)  # the hazard is real ...
    compiled = sf.Compiled(eager, "reduce-overhead", backend="aot_eager")
    compiled._compiled, compiled._graphed = OneBuffer(eager), True  # ... and the graphed path's copy removes it
    torch.testing.assert_close(draw(compiled, solver, prediction), truth, rtol=0, atol=0)


def test_an_unknown_mode_is_refused_naming_the_modes():
    with pytest.raises(ValueError, match="compile must be null .* reduce-overhead"):
        sf.Compiled(net(), "fast")
    score = sf.ScoreFunction(net(), sf.VPSDE())
    assert sf.compile_score(score, None) is score


@pytest.mark.slow
def test_inductor_compiled_samples_match_eager():
    # The code torch.compile generates (C++ on a CPU), with the mode the GPU uses: within float32 rounding.
    eager = net()
    compiled = sf.Compiled(eager, "reduce-overhead")
    torch.testing.assert_close(draw(compiled, sf.UniPC(2)), draw(eager, sf.UniPC(2)), rtol=1e-4, atol=1e-5)
