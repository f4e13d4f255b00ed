"""Linear measurement operators y = A x: inpainting, colorisation, super-resolution, any matrix.

Each gives A, its adjoint A^T, the pseudo-inverse A^+ = A^T (A A^T)^-1, and solves with
(a I + b A A^T), which covariance-aware methods need. Observations keep the shape `A(x)` gives:
the masks of inpainting and colorisation keep the image's shape (zeros where nothing is observed, as
score_sde's controllable-generation code does), pooling gives the small image, a matrix (B, m).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F


class LinearOperator(abc.ABC):
    """y = A x for a batch x of shape (B, ...)."""

    @abc.abstractmethod
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """The measurement of x."""

    @abc.abstractmethod
    def AT(self, y: torch.Tensor) -> torch.Tensor:
        """The adjoint: <A x, y> = <x, A^T y>."""

    @abc.abstractmethod
    def gram_solve(self, v: torch.Tensor, a: float, b) -> torch.Tensor:
        """(a I + b A A^T)^-1 v for v in the range of A (b: a number, or one per sample)."""

    def measurement_noise(self, z: torch.Tensor) -> torch.Tensor:
        """Observation noise from a standard normal z of y's shape: z itself, where y has its own space."""
        return z

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A^+ y = A^T (A A^T)^-1 y: the least-norm x with A x = y (for y in the range of A)."""
        return self.AT(self.gram_solve(y, 0.0, 1.0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _per_sample(b, like: torch.Tensor):
    b = torch.as_tensor(b, dtype=like.dtype, device=like.device)
    return b.reshape(-1, *([1] * (like.ndim - 1))) if b.ndim else b


class Projection(LinearOperator):
    """A = A^T = A^2: an orthogonal projection (A A^T = A, so (a I + b A A^T)^-1 = 1 / (a + b) on its range)."""

    def AT(self, y):
        return self.A(y)

    def measurement_noise(self, z):
        # y lives in x's space with zeros off the observed range: noise only on the range.
        return self.A(z)

    def gram_solve(self, v, a, b):
        return v / (a + _per_sample(b, v))


class Inpainting(Projection):
    """Observe the pixels (coordinates) where `mask` is 1: A x = mask * x. `mask` broadcasts against x."""

    def __init__(self, mask):
        mask = torch.as_tensor(mask)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("an inpainting mask holds 0 (unknown) and 1 (observed) only")
        self.mask = mask

    def A(self, x):
        return self.mask.to(x.device, x.dtype) * x

    def __repr__(self) -> str:
        return f"Inpainting(observed={int(self.mask.sum())} of {self.mask.numel()})"


# The grey axis of RGB, (1, 1, 1) / sqrt(3): the first axis of score_sde's orthonormal colour decoupling
# (controllable_generation.py), the only one colorisation observes.
_GREY = torch.full((3,), 3**-0.5, dtype=torch.float64)


class Colorization(Projection):
    """Observe the grey level: A x is the projection of each pixel's RGB on (1, 1, 1) / sqrt(3).

    That is score_sde's couple(mask * decouple(x)), with the mask keeping the first (grey) axis of its
    orthonormal colour transform. Images are (B, 3, H, W); A is an orthogonal projection, and the
    observation keeps the image's shape.
    """

    def A(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"colorisation needs RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
        axis = _GREY.to(x.device, x.dtype)
        return torch.einsum("bhw,i->bihw", torch.einsum("bihw,i->bhw", x, axis), axis)


class AveragePooling(LinearOperator):
    """Super-resolution: A x = the average of each factor x factor block of (B, C, H, W) images.

    A^T spreads each value over its block divided by factor^2, so A A^T = I / factor^2.
    """

    def __init__(self, factor: int):
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        self.factor = int(factor)

    def A(self, x):
        if x.ndim != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"average pooling by {self.factor} needs (B, C, H, W) images with H and W divisible by it, "
                f"got shape {tuple(x.shape)}"
            )
        return F.avg_pool2d(x, self.factor)

    def AT(self, y):
        return F.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor**2

    def gram_solve(self, v, a, b):
        return v / (a + _per_sample(b, v) / self.factor**2)

    def __repr__(self) -> str:
        return f"AveragePooling({self.factor})"


class MatrixOperator(LinearOperator):
    """Any user matrix M (m, d) on flattened samples: A x = x.flatten(1) @ M^T, observations (B, m)."""

    def __init__(self, matrix, shape=None):
        self.matrix = torch.as_tensor(matrix)
        if self.matrix.ndim != 2:
            raise ValueError(f"the matrix must be (m, d), got shape {tuple(self.matrix.shape)}")
        self.shape = tuple(shape) if shape is not None else (self.matrix.shape[1],)

    def A(self, x):
        return x.flatten(1) @ self.matrix.to(x.device, x.dtype).T

    def AT(self, y):
        return (y @ self.matrix.to(y.device, y.dtype)).reshape(len(y), *self.shape)

    def gram_solve(self, v, a, b):
        M = self.matrix.to(v.device, v.dtype)
        gram = M @ M.T
        b = torch.as_tensor(b, dtype=v.dtype, device=v.device).reshape(-1, 1, 1)
        lhs = a * torch.eye(len(gram), dtype=v.dtype, device=v.device) + b * gram
        return torch.linalg.solve(lhs.expand(len(v), -1, -1), v[:, :, None])[:, :, 0]

    def __repr__(self) -> str:
        return f"MatrixOperator({tuple(self.matrix.shape)})"
