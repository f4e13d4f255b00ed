"""Feature extractors for Frechet distance, KID and precision/recall.

An extractor is any object with `fit(dataset)` (called once with the training split) and
`__call__(x) -> (n, d)` on samples in the data's own scaling. `TrainedClassifier` is the offline
stand-in for FID on small images (a CNN trained in seconds on the data's labels); `Inception` is the
FID network with local weights; `Module` wraps any user `nn.Module`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdeflow.core import distributed
from sdeflow.noise.generators import BATCHES, INIT_WEIGHTS, seeded_generator, stream_seed


class SmallCNN(nn.Module):
    """A small classifier for 1- or 3-channel images of 8 to 32 pixels; `features` is its penultimate layer."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class TrainedClassifier:
    """Trains `SmallCNN` on the training split's labels, then gives its penultimate features.

    Args:
        steps, batch_size, lr: the classifier's training (Adam); seconds on digits or MNIST-5k.
        seed: its initialisation and batches.
    """

    name = "trained-classifier"

    def __init__(self, steps: int = 600, batch_size: int = 128, lr: float = 2e-3, seed: int = 0, device: str = "cpu"):
        self.steps, self.batch_size, self.lr, self.seed, self.device = (
            int(steps),
            int(batch_size),
            float(lr),
            int(seed),
            device,
        )
        self.net = None
        self.accuracy = None

    def fit(self, dataset, held_out=None):
        if dataset.labels is None or not dataset.image:
            raise ValueError(f"{dataset.name}: a trained-classifier feature space needs labelled images")
        g = seeded_generator(self.seed, BATCHES)
        # The initial weights from their own stream; the caller's global generator is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, INIT_WEIGHTS))
            self.net = SmallCNN(in_channels=dataset.shape[0], classes=int(dataset.labels.max()) + 1).to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        x_all, y_all = dataset.all(), dataset.labels
        for _ in range(self.steps):
            idx = torch.randint(len(x_all), (self.batch_size,), generator=g)
            loss = F.cross_entropy(self.net(x_all[idx].to(self.device)), y_all[idx].to(self.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        # Every data-parallel rank must embed its samples with the same network, whatever its GPU's rounding did.
        distributed.broadcast_module(self.net.eval().requires_grad_(False))
        if held_out is not None and held_out.labels is not None:
            with torch.no_grad():
                pred = self.net(held_out.all().to(self.device)).argmax(1).cpu()
            self.accuracy = float((pred == held_out.labels).double().mean())
        return self

    @torch.no_grad()
    def __call__(self, x):
        if self.net is None:
            raise RuntimeError("call fit(dataset) before extracting features")
        return self.net.features(x.to(self.device).float()).cpu()


class Inception:
    """The FID Inception network with weights from `weights` (or the torch hub cache); images in [-1, 1] or [0, 1]."""

    name = "fid-inception-2015-12-05"

    def __init__(self, weights: str | None = None, centered: bool = True, device: str = "cpu"):
        from sdeflow.eval.inception import load_inception

        self.net = load_inception(weights, device)
        self.centered, self.device = centered, device

    def fit(self, dataset, held_out=None):
        return self

    @torch.no_grad()
    def __call__(self, x):
        x = x.to(self.device).float()
        x = (x + 1) / 2 if self.centered else x
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x.clamp(0, 1)).cpu()


class Module:
    """Any user `nn.Module` mapping samples to (n, d) features."""

    def __init__(self, module: nn.Module, name: str = "user-module"):
        self.module, self.name = module.eval(), name

    def fit(self, dataset, held_out=None):
        return self

    @torch.no_grad()
    def __call__(self, x):
        return self.module(x).reshape(len(x), -1).cpu()
