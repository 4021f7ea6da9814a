"""G, the data-generating process: concept values -> images, vectorised over the batch.

Geometry: coordinates linspace(-1, 1, W) on both axes (axis 0 = x, as in the paper's code), an object of
radius `size` (triangle and square of equal area) centred at (x, y), a Gaussian edge blur of `blur * W` pixels,
`img = smooth * color + (1 - smooth) * bg`, plus N(0, noise^2) pixel noise, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..data.concepts import ConceptSpace, ConceptValues

CHUNK = 2048  # images per vectorised block: bounds memory at large N, fixed so results never depend on N


def _masks(v: ConceptValues, lin: np.ndarray) -> np.ndarray:
    """Hard object masks [N, W, W] (float32)."""
    dx = lin[None, :, None] - v.x[:, None, None].astype(np.float32)  # [N, W, 1] (axis 0 = x)
    dy = lin[None, None, :] - v.y[:, None, None].astype(np.float32)  # [N, 1, W]
    r = v.size[:, None, None].astype(np.float32)
    circle = dx * dx + dy * dy < r * r
    out = circle
    if (v.shape != 0).any():
        # Triangle of the circle's area (the paper's formula: slopes of 2, not exactly equilateral).
        side = np.sqrt(4 * np.pi / np.sqrt(3)) * r
        r_in, b = side * np.sqrt(3) / 6, (1 - np.sqrt(3) / 6) * side
        triangle = (dy > -r_in) & (dy < 2 * dx + b) & (dy < -2 * dx + b)
        half = np.sqrt(np.pi) * r / 2  # square of the circle's area
        square = (np.abs(dx) < half) & (np.abs(dy) < half)
        kind = v.shape[:, None, None]
        out = np.where(kind == 1, triangle, np.where(kind == 2, square, circle))
    return out.astype(np.float32)


def render(
    values: ConceptValues, image_size: int, blur: float, noise: float, rng: np.random.Generator | None
) -> np.ndarray:
    """Images [N, 3, H, W] float32 in [0, 1]. `rng` draws the pixel noise (None: no noise)."""
    lin = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    sigma = blur * image_size
    out = np.empty((len(values), 3, image_size, image_size), dtype=np.float32)
    for start in range(0, len(values), CHUNK):
        sl = slice(start, start + CHUNK)
        part = ConceptValues(*(getattr(values, f)[sl] for f in ("x", "y", "color", "size", "shape", "bg_color")))
        smooth = _masks(part, lin)
        if sigma > 0:
            # Same kernel as the paper's per-image gaussian_filter (reflect, truncate 4), batch axis untouched.
            smooth = gaussian_filter(smooth, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)
        smooth = smooth[:, None]  # [n, 1, H, W]
        color = part.color.astype(np.float32)[:, :, None, None]
        bg = part.bg_color.astype(np.float32)[:, :, None, None]
        img = bg + smooth * (color - bg)
        if noise > 0 and rng is not None:
            img += noise * rng.standard_normal(img.shape, dtype=np.float32)
        np.clip(img, 0.0, 1.0, out=out[sl])
    return out


def render_space(values: ConceptValues, space: ConceptSpace, rng: np.random.Generator | None) -> np.ndarray:
    """`render` with the space's image size, blur and noise."""
    return render(values, space.image_size, space.blur, space.noise, rng)
