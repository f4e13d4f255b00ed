"""The counter-based per-sample noise: Philox against its published answers, invariance, and the draws' statistics."""

import numpy as np
import pytest
import scipy.stats
import torch

import sdeflow as sf
from sdeflow.noise.generators import NOISE, PRIOR, PerSampleNoise, philox4x32

M = 0xFFFFFFFF


@pytest.mark.parametrize(
    "counter,key,expected",
    [
        # Random123's known-answer vectors for philox4x32-10 (kat_vectors).
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((M, M, M, M), (M, M), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_gives_the_published_answers(counter, key, expected):
    words = philox4x32(*(np.array([c], dtype=np.uint64) for c in counter), *key)
    assert tuple(int(w[0]) for w in words) == expected


@pytest.mark.parametrize("draw", ["randn", "rand", "randint"])
def test_sample_i_is_the_same_in_any_batch_and_on_any_rank(draw):
    calls = {
        "randn": lambda src, shape: src.randn(shape),
        "rand": lambda src, shape: src.rand(shape),
        "randint": lambda src, shape: src.randint(0, 1000, shape),
    }[draw]
    whole = PerSampleNoise(7, 12)
    ref = [calls(whole, (12, 3, 5)) for _ in range(3)]  # three successive draws
    # The same 12 samples made in batches of 5 + 7, and by 4 ranks of 3: every draw agrees sample by sample.
    for splits in ([(0, 5), (5, 7)], [(0, 3), (3, 3), (6, 3), (9, 3)]):
        sources = [PerSampleNoise(7, n, offset) for offset, n in splits]
        for k in range(3):
            got = torch.cat([calls(src, (n, 3, 5)) for src, (_, n) in zip(sources, splits)])
            assert torch.equal(got, ref[k]), (splits, k)


def test_odd_sizes_and_dtypes_are_served_exactly():
    src = PerSampleNoise(0, 3)
    assert src.randn((3, 7), dtype=torch.float64).shape == (3, 7)
    assert src.randn((3,)).shape == (3,)
    assert src.rand((3, 2), dtype=torch.float16).dtype == torch.float16
    u = PerSampleNoise(0, 1000).rand((1000, 100))
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    # Box-Muller runs in float64: float64 normals carry more than float32's digits.
    z = PerSampleNoise(0, 100).randn((100, 10), dtype=torch.float64)
    assert float((z != z.float().double()).double().mean()) > 0.99
    with pytest.raises(ValueError, match="serves 3 samples"):
        src.randn((4, 2))


def test_the_normal_draws_are_standard_normal():
    # 200,000 values from 2,000 samples: Kolmogorov-Smirnov against N(0, 1) at the 0.1% level, and the
    # first four moments within 5 standard errors of theirs.
    z = PerSampleNoise(11, 2000).randn((2000, 100), dtype=torch.float64).flatten().numpy()
    assert scipy.stats.kstest(z, "norm").pvalue > 1e-3
    n = len(z)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(scipy.stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(scipy.stats.kurtosis(z)) < 5 * np.sqrt(24 / n)


def test_the_draws_are_independent_across_samples_draws_elements_and_streams():
    # Correlations between neighbours along every axis of the counter are what a weak generator shows:
    # each must be within 5 standard errors (1 / sqrt(n)) of zero.
    n, d = 4000, 64
    src = PerSampleNoise(5, n)
    a, b = src.randn((n, d), dtype=torch.float64), src.randn((n, d), dtype=torch.float64)
    other = PerSampleNoise(5, n, purpose=PRIOR).randn((n, d), dtype=torch.float64)
    pairs = {
        "next sample": (a[:-1], a[1:]),
        "next element": (a[:, :-1], a[:, 1:]),
        "element 4 apart (next Philox block)": (a[:, :-4], a[:, 4:]),
        "next draw": (a, b),
        "another purpose": (a, other),
    }
    for name, (u, v) in pairs.items():
        r = float((u * v).mean() / (u.std() * v.std()))
        assert abs(r) < 5 / np.sqrt(u.numel()), (name, r)
    # Uniforms: a chi-square test of 64 bins over 256,000 values.
    u = PerSampleNoise(5, 4000, purpose=NOISE).rand((4000, 64), dtype=torch.float64).flatten().numpy()
    counts = np.bincount((u * 64).astype(int), minlength=64)
    assert scipy.stats.chisquare(counts).pvalue > 1e-3
    k = PerSampleNoise(5, 4000).randint(3, 10, (4000, 16)).flatten().numpy()
    assert k.min() == 3 and k.max() == 9
    assert scipy.stats.chisquare(np.bincount(k - 3, minlength=7)).pvalue > 1e-3


def test_a_stochastic_sampler_gives_sample_i_in_any_batch():
    sde = sf.VPSDE()
    gm = sf.GaussianMixture.random(dim=4, components=3)

    def run(n, offset):
        solver = sf.EDMStochastic(S_churn=10.0)
        return sf.sample(gm.score_fn(sde), sde, solver, (n, 4), steps=6, seed=2, offset=offset).samples

    whole = run(9, 0)
    assert torch.equal(torch.cat([run(4, 0), run(5, 4)]), whole)


def test_the_device_arithmetic_gives_the_cpu_words_and_normals(monkeypatch):
    # On a GPU the words are made by int64 tensor arithmetic (16-bit split products) and Box-Muller runs in torch;
    # on the CPU in numpy. Both are run here on the CPU: the words must be identical, the normals equal to rounding.
    from sdeflow.noise.generators import _mulhilo_int64

    rng = np.random.default_rng(0)
    counter = [rng.integers(0, 2**32, size=(40, 9), dtype=np.uint64) for _ in range(4)]
    for key in [(0, 0), (M, M), (0x9E3779B9, 0x12345678)]:
        ours = philox4x32(*counter, *key)
        device = philox4x32(*(torch.from_numpy(c.astype(np.int64)) for c in counter), *key, mulhilo=_mulhilo_int64)
        assert all(np.array_equal(a, b.numpy().astype(np.uint64)) for a, b in zip(ours, device)), key
    draws = {dtype: PerSampleNoise(3, 50).randn((50, 7, 3), dtype=dtype) for dtype in (torch.float32, torch.float64)}
    # Every draw's words made by the device's arithmetic, on the CPU.
    monkeypatch.setattr(
        PerSampleNoise,
        "_pairs_numpy",
        lambda self, blocks, index, count, also=(): self._pairs_torch(blocks, "cpu", index),
    )
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-13)):
        torch.testing.assert_close(PerSampleNoise(3, 50).randn((50, 7, 3), dtype=dtype), draws[dtype], rtol=0, atol=tol)
    # The device branch's layout, run on the meta device (shapes without values): one draw of (n, *shape[1:]).
    monkeypatch.undo()
    assert PerSampleNoise(0, 5)._normals((5, 7, 3), torch.float32, False, torch.device("meta"), 0).shape == (1, 5, 7, 3)


def test_float32_normals_are_the_float64_ones_rounded():
    # Box-Muller runs in float64 for every dtype, so a draw is one set of numbers, rounded to the dtype asked for.
    assert torch.equal(
        PerSampleNoise(8, 300).randn((300, 50)), PerSampleNoise(8, 300).randn((300, 50), dtype=torch.float64).float()
    )


def test_draws_made_ahead_are_the_draws_made_one_at_a_time():
    # A solver's sequential small draws are computed in blocks; each must equal the same draw index read alone,
    # also when shapes and dtypes interleave (which restarts the blocks) and past a block's end.
    kinds = [((20, 5), torch.float32), ((20, 5), torch.float32), ((20, 2), torch.float64), ((20, 5), torch.float32)]
    seq = PerSampleNoise(3, 20)
    got = [seq.randn(shape, dtype=dtype) for _ in range(6) for shape, dtype in kinds] + [
        seq.randn((20, 5)) for _ in range(30)
    ]
    one = PerSampleNoise(3, 20)
    want = [
        one.randn(shape, dtype=dtype, draw=k) for k, (shape, dtype) in enumerate([kd for _ in range(6) for kd in kinds])
    ]
    want += [one.randn((20, 5), draw=24 + k) for k in range(30)]
    assert seq.draws == 54 and one.draws == 0
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(seq._ahead[2]) > 1  # the long run was drawn ahead


def test_a_run_of_known_steps_draws_its_step_noise_in_one_block(monkeypatch):
    # sf.sample tells the noise its plan's step count: a 10-step stochastic run makes one Philox call (the prior draw
    # and the ten step draws at once) where a prior draw and blocks doubling 1, 2, 4, 8 made five. The numbers are the
    # draws made one at a time, and a run longer than BLOCK_MAX numbers allows is split into even blocks.
    from sdeflow.noise import generators

    calls = []
    philox = generators._philox4x32_numpy
    monkeypatch.setattr(generators, "_philox4x32_numpy", lambda *a: calls.append(a) or philox(*a))
    sde, gm = sf.VPSDE(), sf.GaussianMixture.random(dim=16, components=3)
    solver = sf.PCSampler(sf.EulerMaruyama())
    out = sf.sample(gm.score_fn(sde), sde, solver, (256, 16), nfe=10, seed=4).samples
    assert len(calls) == 1
    x_T = sde.prior_sampling((256, 16), PerSampleNoise(4, 256, purpose=PRIOR))
    one_at_a_time = solver.sample(
        sf.ScoreFunction(gm.score_fn(sde), sde), sde, x_T, solver.plan(sde, nfe=10), generator=PerSampleNoise(4, 256)
    ).samples
    assert torch.equal(out, one_at_a_time)
    long = PerSampleNoise(1, 1024, steps=20)
    got = [long.randn((1024, 16)) for _ in range(20)]
    assert len(long._ahead[2]) == 4  # BLOCK_MAX = 2^16 numbers a block: 20 draws of 1024 x 16 in five blocks of four
    assert all(torch.equal(z, PerSampleNoise(1, 1024).randn((1024, 16), draw=k)) for k, z in enumerate(got))
