"""Frequency responses of convolution filters.

A 1-D bank ``w`` of shape (C, C_in, k) has, for output filter c and input channel i, the
response ``H_ci(f) = sum_t w[c, i, t] exp(-2 pi j f t)``, sampled at ``f = m / n_fft``,
``m = 0 .. n_fft / 2`` (cycles per sample) by a zero-padded DFT. The average frequency
response (Loweimi et al. 2019) is ``AFR(f) = 1 / (C C_in) sum_c sum_i |H_ci(f)|``: averaged
over the C output filters and over input channels.

A 2-D bank (C, C_in, kh, kw) has the 2-D DFT on an n_fft x n_fft grid, ``f_y`` along the
kernel's rows, ``f_x`` along its columns; its magnitude averaged over filters and input
channels is the mean spectrum. Two profiles summarise it: radial (the mean over each ring
``round(|f| n_fft) = m``, the 2-D AFR) and by orientation (the mean over
``0 < |f| <= 0.5`` in bins centred on multiples of 180 / n_orientations degrees of the
angle of ``(f_x, f_y)`` modulo 180). A grating
``cos(2 pi f (x cos t + y sin t))`` peaks at radius f and orientation t.

References
----------
E. Loweimi, P. Bell and S. Renals, "On learning interpretable CNNs with parametric modulated
kernel-based filters", Interspeech 2019.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Output filters transformed at once (bounds memory: C_in * n_fft^2 complex values each).
_CHUNK = 16


@dataclass(frozen=True)
class Response2d:
    """The averaged response of a 2-D filter bank.

    Attributes
    ----------
    spectrum : (n_fft, n_fft), mean magnitude, zero frequency at the centre (fftshift).
    frequencies : (n_fft // 2 + 1,), cycles/sample.
    radial : (n_fft // 2 + 1,), the 2-D AFR.
    orientations : (n_orientations,), bin centres in degrees, ``k * 180 / n_orientations``.
    by_orientation : (n_orientations,).
    """

    spectrum: np.ndarray
    frequencies: np.ndarray
    radial: np.ndarray
    orientations: np.ndarray
    by_orientation: np.ndarray


def _check_n_fft(n_fft: int, taps: int) -> None:
    if n_fft < taps:
        raise ValueError(f"n_fft ({n_fft}) must be at least the kernel size ({taps})")


def afr_1d(weight: np.ndarray, *, n_fft: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``(frequencies, afr)`` of a 1-D bank ``weight`` (C, C_in, k): both (n_fft // 2 + 1,),
    frequencies in cycles/sample."""
    weight = np.asarray(weight, dtype=np.float64)
    _check_n_fft(n_fft, weight.shape[-1])
    magnitude = np.abs(np.fft.rfft(weight, n=n_fft, axis=-1))
    return np.arange(n_fft // 2 + 1) / n_fft, magnitude.mean(axis=(0, 1))


def response_2d(weight: np.ndarray, *, n_fft: int = 64, n_orientations: int = 36) -> Response2d:
    """The mean spectrum and its radial and orientation profiles of a 2-D bank ``weight``
    (C, C_in, kh, kw)."""
    weight = np.asarray(weight, dtype=np.float64)
    _check_n_fft(n_fft, max(weight.shape[-2:]))
    total = np.zeros((n_fft, n_fft))
    for start in range(0, len(weight), _CHUNK):
        chunk = weight[start:start + _CHUNK]
        total += np.abs(np.fft.fft2(chunk, s=(n_fft, n_fft))).sum(axis=(0, 1))
    spectrum = np.fft.fftshift(total / (weight.shape[0] * weight.shape[1]))
    grid = np.fft.fftshift(np.fft.fftfreq(n_fft))
    fy, fx = np.meshgrid(grid, grid, indexing="ij")
    radius = np.hypot(fx, fy)
    ring = np.rint(radius * n_fft).astype(int)
    n_rings = n_fft // 2 + 1
    inside = ring < n_rings
    radial = (np.bincount(ring[inside], spectrum[inside], n_rings)
              / np.bincount(ring[inside], minlength=n_rings))
    width = 180.0 / n_orientations
    angle = np.degrees(np.arctan2(fy, fx)) % 180.0
    bins = np.rint(angle / width).astype(int) % n_orientations  # centred on k * width
    ringed = (radius > 0) & (radius <= 0.5)
    counts = np.bincount(bins[ringed], minlength=n_orientations)
    sums = np.bincount(bins[ringed], spectrum[ringed], n_orientations)
    by_orientation = np.divide(sums, counts, out=np.full(n_orientations, np.nan),
                               where=counts > 0)
    return Response2d(spectrum, np.arange(n_rings) / n_fft, radial,
                      np.arange(n_orientations) * width, by_orientation)


def conv_weight(tensors: dict[str, np.ndarray], op: str) -> np.ndarray | None:
    """The kernel of a convolution layer's weights, as (C_out, C_in, *kernel): the tensor
    with the most axes (a bias has one); a transposed convolution's (C_in, C_out, ...) is
    swapped. None when no tensor has spatial axes (a matrix product)."""
    kernel = max(tensors.values(), key=np.ndim, default=None)
    if kernel is None or kernel.ndim < 3:
        return None
    return np.swapaxes(kernel, 0, 1) if op.startswith("ConvTranspose") else kernel
