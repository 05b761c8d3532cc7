"""Input parametrisations and random transformations for activation maximisation.

Optimising raw pixels with gradient ascent yields high-frequency patterns
that excite a unit without resembling anything in the data. Two remedies
from the feature-visualisation literature are implemented here:

- a *decorrelated* image parametrisation (Olah et al. 2017): the optimiser
  moves scaled 2-D Fourier coefficients whose scale falls as ``1/f``, so
  every spatial frequency learns at a comparable rate; channels are mixed by
  the square root of the data's channel correlation matrix; a clamp with
  inward-flowing gradients (:func:`to_range`, in place of Lucid's sigmoid,
  whose vanishing gradient can pin a pixel to the wrong bound) maps the
  result into the data's per-channel pixel range;
- *transformation robustness* (Olah et al. 2017) and blurring / L2 decay
  (Yosinski et al. 2015): each step sees the image randomly shifted by a few
  pixels (and, for images of 16 px and more, slightly scaled and rotated).

Non-image inputs are a box-constrained vector: :func:`to_range` maps an
unbounded parameter to ``[low, high]`` per feature.

Every batch element (one unit) draws its initial value and its transforms
from its own seeded generator, so optimising units in one batch gives the
same result as optimising each on its own with the same seed.

References
----------
Olah, C., Mordvintsev, A. & Schubert, L. (2017). Feature Visualization.
Distill. https://doi.org/10.23915/distill.00007
Yosinski, J., Clune, J., Nguyen, A., Fuchs, T. & Lipson, H. (2015).
Understanding neural networks through deep visualization. ICML Deep Learning
Workshop. arXiv:1506.06579
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Standard deviation of the initial parameters (Lucid's default).
INIT_SD = 0.01
#: Lucid divides the inverse FFT by this constant so the initial image is near the range centre.
_FFT_MAGIC = 4.0


def is_image_shape(shape: Sequence[int]) -> bool:
    """True for ``(C, H, W)`` inputs with ``H, W >= 8``: these get the Fourier parametrisation."""
    return len(shape) == 3 and shape[1] >= 8 and shape[2] >= 8


def data_range(x: np.ndarray, input_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images) or per-feature (other inputs) minimum and maximum of the data.

    Parameters
    ----------
    x : ndarray, shape (n, ...) with ``prod(input_shape)`` values per sample, data units.
    input_shape : the model's input shape of one sample.

    Returns
    -------
    low, high : ndarray, float32, broadcastable to ``input_shape``: ``(C, 1, 1)``
        for images, ``input_shape`` otherwise.
    """
    samples = np.asarray(x, dtype=np.float32).reshape((len(x), *input_shape))
    if is_image_shape(input_shape):
        return (samples.min(axis=(0, 2, 3))[:, None, None],
                samples.max(axis=(0, 2, 3))[:, None, None])
    return samples.min(axis=0), samples.max(axis=0)


def channel_decorrelation(x: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """Square root of the data's channel correlation matrix, scaled to unit max column norm.

    Lucid's ``color_correlation_svd_sqrt`` computed from the dataset instead
    of ImageNet: the latent image's channels are mixed by this matrix so the
    optimiser moves along decorrelated colour directions.

    Parameters
    ----------
    x : ndarray, shape (n, C*H*W) or (n, C, H, W), data units.
    input_shape : ``(C, H, W)``.

    Returns
    -------
    ndarray, shape (C, C), float32.
    """
    channels = int(input_shape[0])
    if channels == 1:
        return np.ones((1, 1), dtype=np.float32)
    per_sample = np.asarray(x, dtype=np.float64).reshape((len(x), channels, -1))
    pixels = per_sample.transpose(1, 0, 2).reshape(channels, -1)
    std = pixels.std(axis=1, keepdims=True)
    standard = (pixels - pixels.mean(axis=1, keepdims=True)) / np.maximum(std, 1e-12)
    correlation = standard @ standard.T / standard.shape[1]
    u, s, _ = np.linalg.svd(correlation)
    root = u * np.sqrt(np.maximum(s, 0.0))
    root /= max(float(np.linalg.norm(root, axis=0).max()), 1e-12)
    return root.astype(np.float32)


class _InwardClamp(torch.autograd.Function):
    """``clamp(z, 0, 1)`` whose gradient also flows outside the box when descent points inward.

    A sigmoid's gradient vanishes at both ends, so a pixel pushed to the wrong
    bound early (the Fourier basis moves neighbours together) stays there; a
    plain clamp's gradient is exactly zero outside. Here the gradient passes
    inside ``[0, 1]`` and, outside, only where a descent step moves ``z`` back
    towards the box: the fixed points are those of projected gradient ascent.
    """

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        return z.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        keep = ((z >= 0.0) & (z <= 1.0)) | ((z < 0.0) & (grad < 0.0)) | ((z > 1.0) & (grad > 0.0))
        return grad * keep


def to_range(latent: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``low + (high - low) * clamp(1/2 + latent/4, 0, 1)`` with inward-flowing gradients.

    The slope at ``latent = 0`` is a sigmoid's (1/4), so learning rates tuned
    for sigmoid parametrisations carry over.
    """
    unit = _InwardClamp.apply(0.5 + 0.25 * latent)
    return low + (high - low) * unit


@dataclass
class BoxVector:
    """A batch of inputs ``to_range(v, low, high)``: always inside the data's box.

    Attributes
    ----------
    latent : Tensor, shape (B, *input_shape), the optimised parameter.
    low, high : Tensor broadcastable to ``input_shape``, data units.
    """

    latent: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def create(cls, generators: Sequence[torch.Generator], input_shape: Sequence[int],
               low: np.ndarray, high: np.ndarray, device: str) -> BoxVector:
        latent = torch.stack([torch.randn(tuple(input_shape), generator=g) * INIT_SD
                              for g in generators]).to(device).requires_grad_(True)
        return cls(latent, torch.as_tensor(low, device=device),
                   torch.as_tensor(high, device=device))

    def parameters(self) -> list[torch.Tensor]:
        return [self.latent]

    def __call__(self) -> torch.Tensor:
        """The inputs, shape (B, *input_shape), data units."""
        return to_range(self.latent, self.low, self.high)

    def blur_(self, sigma: float) -> None:
        """Vectors have no spatial neighbourhood: nothing to blur."""


def _frequencies(height: int, width: int) -> np.ndarray:
    """|f| in cycles per pixel on the ``rfft2`` grid, shape (H, W//2 + 1)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


@dataclass
class FourierImage:
    """A batch of images parametrised by 1/f-scaled Fourier coefficients (Olah et al. 2017).

    ``image = to_range(M @ irfft2(scale * spectrum) / 4, low, high)``
    with ``scale = sqrt(H W) / max(|f|, 1 / max(H, W))`` and ``M`` the channel
    decorrelation matrix.

    Attributes
    ----------
    spectrum : Tensor, shape (B, C, H, W//2 + 1, 2), real and imaginary parts, optimised.
    scale : Tensor, shape (H, W//2 + 1, 1).
    frequencies : Tensor, shape (H, W//2 + 1, 1), cycles per pixel.
    mixing : Tensor, shape (C, C).
    low, high : Tensor, shape (C, 1, 1), data units.
    size : (H, W).
    """

    spectrum: torch.Tensor
    scale: torch.Tensor
    frequencies: torch.Tensor
    mixing: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    size: tuple[int, int]

    @classmethod
    def create(cls, generators: Sequence[torch.Generator], input_shape: Sequence[int],
               low: np.ndarray, high: np.ndarray, mixing: np.ndarray,
               device: str) -> FourierImage:
        channels, height, width = (int(d) for d in input_shape)
        freqs = _frequencies(height, width)
        scale = np.sqrt(height * width) / np.maximum(freqs, 1.0 / max(height, width))
        shape = (channels, height, width // 2 + 1, 2)
        spectrum = torch.stack([torch.randn(shape, generator=g) * INIT_SD for g in generators])

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

        return cls(spectrum.to(device).requires_grad_(True), tensor(scale[..., None]),
                   tensor(freqs[..., None]), tensor(mixing), tensor(low), tensor(high),
                   (height, width))

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def __call__(self) -> torch.Tensor:
        """The images, shape (B, C, H, W), data units."""
        coefficients = torch.view_as_complex((self.spectrum * self.scale).contiguous())
        latent = torch.fft.irfft2(coefficients, s=self.size) / _FFT_MAGIC
        latent = torch.einsum("ij,bjhw->bihw", self.mixing, latent)
        return to_range(latent, self.low, self.high)

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Gaussian blur of the latent image (``sigma`` pixels), done on its spectrum.

        The Fourier transform of a Gaussian of standard deviation ``sigma`` is
        ``exp(-2 pi^2 sigma^2 f^2)``; multiplying the coefficients by it blurs
        the latent image exactly (Yosinski et al. 2015 blur the pixels).
        """
        self.spectrum.mul_(torch.exp(-2.0 * math.pi**2 * sigma**2 * self.frequencies**2))


Parametrization = BoxVector | FourierImage


@dataclass(frozen=True)
class TransformSettings:
    """Random transforms for image inputs.

    Attributes
    ----------
    jitter : int, largest shift in pixels (uniform integer in ``[-jitter, jitter]``).
    scale : float, relative scale drawn uniformly from ``[1 - scale, 1 + scale]``.
    degrees : float, rotation drawn uniformly from ``[-degrees, degrees]``.
    """

    jitter: int = 1
    scale: float = 0.0
    degrees: float = 0.0

    @classmethod
    def for_size(cls, height: int, width: int, jitter: int | None = None) -> TransformSettings:
        """Defaults by image size: 1 px jitter only below 16 px; larger images also get
        ``+-5%`` scale and ``+-5`` degrees, with jitter ``min(H, W) // 16`` px."""
        side = min(height, width)
        auto = max(1, side // 16)
        shift = auto if jitter is None else int(jitter)
        if side < 16:
            return cls(shift, 0.0, 0.0)
        return cls(shift, 0.05, 5.0)

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and self.scale == 0.0 and self.degrees == 0.0


def draw_transforms(generators: Sequence[torch.Generator], steps: int,
                    settings: TransformSettings, size: tuple[int, int]) -> torch.Tensor:
    """Affine matrices for every step and batch element, one generator per element.

    Returns
    -------
    Tensor, shape (steps, B, 2, 3): ``affine_grid`` matrices in normalised
    coordinates (output -> input sampling location).
    """
    height, width = size
    thetas = []
    for generator in generators:
        shift = torch.randint(-settings.jitter, settings.jitter + 1, (steps, 2),
                              generator=generator).float()
        scale = 1.0 + settings.scale * (2.0 * torch.rand(steps, generator=generator) - 1.0)
        angle = math.radians(settings.degrees) * (2.0 * torch.rand(steps, generator=generator)
                                                  - 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.zeros(steps, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta[:, 0, 2] = 2.0 * shift[:, 0] / width
        theta[:, 1, 2] = 2.0 * shift[:, 1] / height
        thetas.append(theta)
    return torch.stack(thetas, dim=1)


def apply_transform(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` (B, C, H, W) with per-element affine ``theta`` (B, 2, 3).

    Integer shifts without scale or rotation land on pixel centres, so they
    are exact; borders are filled by reflection.
    """
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape),
                         align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)
