"""G, the data-generating process: concept values -> images, vectorised over the batch.

Geometry: coordinates linspace(-1, 1, W) on both axes (axis 0 = x, as in the paper's code), an object of
radius `size` (triangle and square of equal area) centred at (x, y), a Gaussian edge blur of `blur * W` pixels,
`img = smooth * color + (1 - smooth) * bg`, plus N(0, noise^2) pixel noise, clipped to [0, 1].

`paper_render` is the paper's own per-image algorithm (the data-generating process as its official code draws it:
one image at a time, a scipy Gaussian blur per image, noise from NumPy's legacy generator); it is the reference G
is checked against (tests) and timed against (`benchmarks/render_throughput.py`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import get_args

import numpy as np
from scipy.ndimage import gaussian_filter

from ..config import NoiseStreams
from ..data.concepts import ConceptSpace, ConceptValues

CHUNK = 256  # images per vectorised block: small enough to stay in cache; results never depend on it
TRUNCATE = 4.0  # kernel radius in sigmas, scipy's default (the paper's blur)


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


@lru_cache(maxsize=32)
def blur_matrix(width: int, sigma: float) -> np.ndarray:
    """[W, W] float64 matrix B with `B @ m` = scipy's 1-D `gaussian_filter(m, sigma, mode="reflect", truncate=4)`
    along axis 0 (reflect = half-sample symmetric, repeated for kernels wider than the image)."""
    radius = int(TRUNCATE * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma**2 * taps.astype(np.float64) ** 2)
    kernel /= kernel.sum()  # scipy's own kernel, normalised the same way
    src = np.mod(np.arange(width)[:, None] + taps[None, :], 2 * width)  # [W, taps]
    src = np.where(src >= width, 2 * width - 1 - src, src)
    out = np.zeros((width, width))
    np.add.at(out, (np.repeat(np.arange(width), len(taps)), src.ravel()), np.tile(kernel, width))
    out.setflags(write=False)
    return out


def blur_masks(masks: np.ndarray, sigma: float) -> np.ndarray:
    """[N, W, W] float32 -> the same blurred along both image axes, equal bit for bit to
    `gaussian_filter(masks, (0, sigma, sigma), mode="reflect", truncate=4)` (the paper's per-image blur).

    Two matrix products in float64, rounded to float32 between the passes exactly where scipy rounds (its
    intermediate array is float32): several times faster than scipy's line-by-line filter at 16-64 px. Equality is
    checked by tests (a float64 sum in another order could in principle round differently on another BLAS)."""
    b = blur_matrix(masks.shape[-1], float(sigma))
    # Both operands float64 and contiguous, so NumPy hands the products to BLAS (a mixed-type or transposed operand
    # falls back to its slow generic loop).
    first = np.matmul(b, masks.astype(np.float64)).astype(np.float32)  # axis 1 (scipy filters axis 1 first)
    return np.matmul(first.astype(np.float64), _blur_matrix_t(b.shape[0], float(sigma))).astype(np.float32)  # axis 2


@lru_cache(maxsize=32)
def _blur_matrix_t(width: int, sigma: float) -> np.ndarray:
    """`blur_matrix(...).T`, contiguous (the second pass, along axis 2)."""
    out = np.ascontiguousarray(blur_matrix(width, sigma).T)
    out.setflags(write=False)
    return out


NOISE_STREAMS = get_args(NoiseStreams)
# Images per noise stream with `noise_streams="per_block"`: part of what the images are (a test pins them), and
# part of the probe cache key.
NOISE_BLOCK = 256


def block_noise(key: int, j: int) -> np.random.Generator:
    """The generator of block j's pixel noise under `noise_streams="per_block"` (NumPy's spawned-stream rule)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key, spawn_key=(j,))))


def render(
    values: ConceptValues, image_size: int, blur: float, noise: float, rng: np.random.Generator | None,
    threads: int = 2, noise_streams: NoiseStreams = "one",
) -> np.ndarray:
    """Images [N, 3, H, W] float32 in [0, 1]. The pixel noise comes from `rng` (None: no noise).

    `noise_streams="one"` (the default, and every data set made before the option existed): all pixel noise is
    drawn from `rng`, image after image. With `threads` above 1 it is drawn on a second thread while this one draws
    the objects, in the same order, so the images are the same for any `threads`; at 32 px that one stream of draws
    bounds the speed. `"per_block"`: one draw from `rng` is a key, block j of `NOISE_BLOCK` images draws its noise
    from `block_noise(key, j)`, and `threads` workers each render whole blocks (objects and noise): 1.4x the
    default's speed on two threads at 32 px. The images do not depend on `threads` either; the objects are the
    default's, the noise has the same distribution but different values."""
    if noise_streams not in NOISE_STREAMS:
        raise ValueError(f"noise_streams: {noise_streams!r} is not one of {', '.join(NOISE_STREAMS)}")
    n = len(values)
    out = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    noisy = noise > 0 and rng is not None
    lin = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    sigma = blur * image_size
    if noise_streams == "per_block":
        _render_per_block(values, lin, sigma, noise, rng if noisy else None, threads, out)
        return out
    chunks = _slices(n, CHUNK)

    # Two noise buffers, reused: the drawing thread fills one while this one composes with the other (fresh
    # arrays of a chunk's size would be new pages, faulted in on every chunk).
    buffers = [np.empty((CHUNK, 3, image_size, image_size), dtype=np.float32) for _ in range(2 if noisy else 0)]

    def draw(k: int) -> np.ndarray:
        sl = chunks[k]
        return rng.standard_normal((sl.stop - sl.start, 3, image_size, image_size), dtype=np.float32,
                                   out=buffers[k % 2][: sl.stop - sl.start])

    pool = ThreadPoolExecutor(1) if noisy and threads > 1 and len(chunks) > 1 else None
    try:
        # Chunk k's noise is drawn (in chunk order, one draw at a time) while chunk k's objects are drawn here; the
        # scaling by `noise` is done here, which keeps the drawing thread (the slower one at 32 px) to the draws.
        pending = pool.submit(draw, 0) if pool else None
        for k, sl in enumerate(chunks):
            img = _draw_objects(values, sl, lin, sigma, out)
            if noisy:
                if pool:
                    draws = pending.result()
                    pending = pool.submit(draw, k + 1) if k + 1 < len(chunks) else None
                else:
                    draws = draw(k)
                draws *= noise
                img += draws
            np.clip(img, 0.0, 1.0, out=img)
    finally:
        if pool:
            pool.shutdown(wait=True)
    return out


def _slices(n: int, size: int) -> list[slice]:
    """Consecutive slices of `size` items covering range(n), the last one shorter."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _draw_objects(values: ConceptValues, sl: slice, lin: np.ndarray, sigma: float, out: np.ndarray) -> np.ndarray:
    """Writes the noiseless images of `values[sl]` into `out[sl]` and returns that view [n, 3, H, W]."""
    part = ConceptValues(*(getattr(values, f)[sl] for f in ("x", "y", "color", "size", "shape", "bg_color")))
    smooth = _masks(part, lin)
    if sigma > 0:
        smooth = blur_masks(smooth, sigma)
    bg = part.bg_color.astype(np.float32)  # [n, 3]
    diff = part.color.astype(np.float32) - bg
    img = out[sl]  # [n, 3, H, W], written in place: no temporaries of the batch's size
    np.multiply(smooth[:, None], diff[:, :, None, None], out=img)  # bg + smooth * (color - bg)
    img += bg[:, :, None, None]
    return img


def _render_per_block(values: ConceptValues, lin: np.ndarray, sigma: float, noise: float,
                      rng: np.random.Generator | None, threads: int, out: np.ndarray) -> None:
    """`render` with `noise_streams="per_block"`, into `out` (`rng` None: no noise): any worker can render any
    block, since block j's noise comes from `block_noise(key, j)` with one key drawn from `rng`."""
    blocks = _slices(len(values), NOISE_BLOCK)
    # Like the single stream, the caller's generator moves only when there is noise to draw.
    key = int(rng.integers(2**63)) if rng is not None and blocks else None
    local = threading.local()  # one reused noise buffer per worker (fresh arrays are new pages every block)

    def block(j: int) -> None:
        img = _draw_objects(values, blocks[j], lin, sigma, out)
        if key is not None:
            if not hasattr(local, "draws"):
                local.draws = np.empty((NOISE_BLOCK, *img.shape[1:]), dtype=np.float32)
            draws = block_noise(key, j).standard_normal(img.shape, dtype=np.float32, out=local.draws[: len(img)])
            draws *= noise
            img += draws
        np.clip(img, 0.0, 1.0, out=img)

    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(min(threads, len(blocks))) as pool:
            list(pool.map(block, range(len(blocks))))  # list(): re-raises a worker's error here
    else:
        for j in range(len(blocks)):
            block(j)


def render_space(values: ConceptValues, space: ConceptSpace, rng: np.random.Generator | None,
                 threads: int = 2) -> np.ndarray:
    """`render` with the space's image size, blur, noise and noise streams."""
    return render(values, space.image_size, space.blur, space.noise, rng, threads, space.noise_streams)


def paper_render(values: ConceptValues, image_size: int, noise: float, rng: np.random.RandomState | None,
                 sigma: float = 1.0) -> np.ndarray:
    """The paper's algorithm, image by image: float64 grids, circle or triangle mask, scipy blur of `sigma` pixels,
    `smooth * color + (1 - smooth) * bg`, legacy-generator noise (`randn(H, W, 3) * noise`), clip, float32.
    Returns [N, 3, H, W] (the paper's images are [N, H, W, 3]). Squares are ours, not the paper's: refused."""
    if (values.shape == 2).any():
        raise ValueError("the paper's algorithm draws circles and triangles only")
    arr = np.linspace(-1.0, 1.0, image_size)
    x_grid, y_grid = np.meshgrid(arr, arr, indexing="ij")
    images = []
    for i in range(len(values)):
        image = np.zeros((image_size, image_size, 3), dtype=np.float32)
        dx, dy, size = x_grid - values.x[i], y_grid - values.y[i], values.size[i]
        if values.shape[i] == 0:
            mask = np.sqrt(dx**2 + dy**2) < size
        else:
            side = np.sqrt(4 * np.pi / np.sqrt(3)) * size
            incircle, b = side * (np.sqrt(3) / 6), (1 - (np.sqrt(3) / 6)) * side
            mask = (dy > (-incircle)) * (dy < (2 * dx + b)) * (dy < (-2 * dx + b))
        smooth = gaussian_filter(mask.astype(np.float32), sigma)[:, :, None]
        image += smooth * values.color[i][None, None, :] + (1 - smooth) * values.bg_color[i][None, None, :]
        if noise > 0 and rng is not None:
            image += rng.randn(image_size, image_size, 3) * noise
        images.append(np.clip(image, 0, 1).astype(np.float32))
    return np.stack(images).transpose(0, 3, 1, 2)
