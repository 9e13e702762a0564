"""Minibatches and augmentation on the device, from ``uint8`` images already there.

A plain PIL ``DataLoader`` cannot feed a compiled ViT-S on a GPU (see
``../shared/guide/BENCHMARKS.md``): decode once (:func:`examples.leukemia.pack.load_pack`),
keep the images as ``uint8`` on the GPU (PBC at 224 px: ~2.2 GB), and cut,
augment and normalise each batch there with batched tensor ops. Everything here
also runs on CPU (the tests do).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TTA_MODES",
    "GPUBatches",
    "add_tta_argument",
    "check_tta",
    "gpu_augment",
    "tta_mean",
    "tta_views",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


#: test-time augmentation modes and their number of views (see :func:`tta_views`)
TTA_MODES: dict[str, int] = {"none": 1, "flip": 2, "d4": 8}


def check_tta(mode: Any) -> str:
    """``mode`` if it is one of :data:`TTA_MODES`, else a ValueError that lists them.

    Examples:
        >>> check_tta("d4")
        'd4'
    """
    if mode not in TTA_MODES:
        raise ValueError(f"tta: expected one of {sorted(TTA_MODES)}, got {mode!r}.")
    return mode


def tta_views(images: torch.Tensor, mode: str) -> Iterator[torch.Tensor]:
    """The views of a batch that test-time augmentation averages over, the batch itself first.

    ``"none"``: the batch. ``"flip"``: it and its horizontal mirror. ``"d4"``: the 8 symmetries of
    the square (the 4 rotations by 90° of the batch and of its mirror), the same symmetries
    :func:`gpu_augment` trains with; needs square images. Each view keeps the input's memory
    format (channels-last stays channels-last).

    Args:
        images: ``(B, C, H, W)`` tensor (any dtype).
        mode: one of :data:`TTA_MODES`.

    Raises:
        ValueError: an unknown ``mode``, or ``"d4"`` on images that are not square.

    Examples:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> [v.flatten().tolist() for v in tta_views(x, "flip")]
        [[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 3.0, 2.0]]
        >>> len(list(tta_views(x, "d4")))
        8
    """
    check_tta(mode)
    if mode == "d4" and images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"tta: 'd4' rotates by 90 degrees and needs square images, got {tuple(images.shape[-2:])}; use tta='flip'."
        )
    channels_last = images.ndim == 4 and images.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def keep(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=fmt)

    yield images
    if mode == "none":
        return
    mirror = keep(torch.flip(images, dims=(-1,)))
    yield mirror
    if mode == "flip":
        return
    for k in (1, 2, 3):
        yield keep(torch.rot90(images, k, dims=(-2, -1)))
        yield keep(torch.rot90(mirror, k, dims=(-2, -1)))


def tta_mean(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str) -> torch.Tensor:
    """The mean of ``fn(view)`` over the views of :func:`tta_views` (``fn(images)`` itself for ``"none"``).

    Used with ``fn`` = a model's node marginals: an average of consistent marginals is consistent.

    Examples:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> tta_mean(lambda v: v[..., 0, 0], x, "flip")  # top-left pixel of x and of its mirror
        tensor([[0.5000]])
    """
    check_tta(mode)
    total = None
    for view in tta_views(images, mode):
        value = fn(view)
        total = value if total is None else total + value
    return total / TTA_MODES[mode] if mode != "none" else total


def add_tta_argument(parser: Any, *, default: str | None = None, note: str = "") -> None:
    """Add the scripts' shared ``--tta`` flag (one of :data:`TTA_MODES`) to an ``argparse`` parser.

    ``default=None`` means "the checkpoint's" (what ``train --tta`` recorded); ``note`` ends the help.

    Examples:
        >>> import argparse
        >>> p = argparse.ArgumentParser()
        >>> add_tta_argument(p, default="none")
        >>> p.parse_args(["--tta", "d4"]).tta
        'd4'
    """
    parser.add_argument(
        "--tta",
        default=default,
        choices=tuple(TTA_MODES),
        help="test-time augmentation: average the node marginals over the image and its mirror (flip) or over "
        "the 8 flips and 90-degree rotations (d4)" + (f"; {note}" if note else ""),
    )


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device)


def _reflect(k: torch.Tensor, n: int) -> torch.Tensor:
    # index k in [-(n-1), 2(n-1)] of a reflect-padded axis of length n -> its source index in [0, n)
    return (n - 1) - ((n - 1) - k.abs()).abs()


def _flipped(mask: torch.Tensor | None, n: int, *indices: torch.Tensor) -> list[torch.Tensor]:
    # each (B, L) index tensor mirrored (k -> n - 1 - k) in the samples where mask is set (None: none)
    if mask is None:
        return list(indices)
    return [torch.where(mask[:, None], n - 1 - k, k) for k in indices]


def gpu_augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    flips: bool = True,
    rotations: bool = True,
    max_shift: float = 0.1,
    brightness: float = 0.1,
    contrast: float = 0.1,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Random flips, 90° rotations, shifts and brightness/contrast, drawn per sample, batched.

    For each sample, independently: a horizontal flip, a vertical flip and (for
    square images) a transpose, each with probability 1/2: the 8 symmetries of the
    square (flips and 90° rotations) equally likely, which a blood cell seen from
    above does not care about; a shift by up to ``max_shift`` of the side in each
    direction, the border filled by reflection (a padded crop); contrast and
    brightness factors ``c, b`` uniform in ``[1 - contrast, 1 + contrast]`` and
    ``[1 - brightness, 1 + brightness]``: ``x' = (x - m) * c + m * b`` with ``m`` the
    sample's mean, clamped to ``[0, 255]``.

    The flips, transpose, padding and crop are composed into one source pixel per
    output pixel and applied as a single ``gather`` on the input's dtype (``uint8``:
    a quarter of the memory traffic of ``float32``); only the brightness/contrast
    step works in ``float32``. No Python loop over samples.

    The random numbers come from ``generator`` in a fixed order, each a
    ``torch.rand`` over the batch and drawn only when its step is on: horizontal
    flips and vertical flips (with ``flips``), transposes (with ``rotations``, square
    images), the ``2B`` shift offsets (rows, then columns; with a shift of at least one
    pixel), then contrast and brightness, drawn together when either is non-zero. The
    same generator state gives the same augmentation.

    Args:
        images: ``(B, C, H, W)`` ``uint8`` or float tensor with values in ``[0, 255]``.
        generator: a ``torch.Generator`` on ``images.device`` (``None``: the global one).
        flips: random horizontal and vertical flips.
        rotations: random transposes (with ``flips``: all 90° rotations); square images only.
        max_shift: largest shift, as a fraction of the side (float < 1) or in pixels (int).
        brightness: brightness jitter amplitude (0 turns it off).
        contrast: contrast jitter amplitude (0 turns it off).
        dtype: dtype of the result (default: the input's); e.g. ``torch.float32`` for
            ``uint8`` images about to be normalised, which skips rounding back to ``uint8``.

    Returns:
        a tensor of the input's shape, in ``dtype``, values in ``[0, 255]``
        (``uint8``: rounded and clamped), on the same device.

    Raises:
        ValueError: ``images`` is not 4-D, the options are out of range, or ``dtype`` is neither
            ``uint8`` nor floating.

    Examples:
        >>> x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
        >>> y = gpu_augment(x, torch.Generator().manual_seed(0))
        >>> y.shape, y.dtype
        (torch.Size([4, 3, 16, 16]), torch.uint8)
        >>> gpu_augment(x, torch.Generator().manual_seed(0), dtype=torch.float32).dtype
        torch.float32
    """
    if images.ndim != 4:
        raise ValueError(f"images: expected a (B, C, H, W) tensor, got shape {tuple(images.shape)}.")
    if not 0 <= brightness < 1 or not 0 <= contrast < 1:
        raise ValueError(f"brightness, contrast: expected values in [0, 1), got {brightness!r}, {contrast!r}.")
    b, c, h, w = images.shape
    if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Real):
        raise ValueError(
            f"max_shift: expected a fraction of the side (a float < 1, e.g. 0.1) or pixels (an int), got {max_shift!r}."
        )
    # numpy floats are fractions too (np.float32(0.1) read as int(0.1) = 0 pixels turned shifts off)
    shift = int(max_shift) if isinstance(max_shift, numbers.Integral) else round(float(max_shift) * min(h, w))
    if shift < 0 or shift >= min(h, w):
        raise ValueError(f"max_shift: expected 0 <= shift < min(H, W) = {min(h, w)} pixels, got {max_shift!r}.")
    out_dtype = images.dtype if dtype is None else dtype
    if not (out_dtype == torch.uint8 or out_dtype.is_floating_point):
        raise ValueError(f"dtype: expected torch.uint8 or a floating dtype, got {out_dtype}; pass e.g. torch.float32.")
    if b == 0:
        return images.to(out_dtype, copy=True)
    dev = images.device
    x = images
    rotate = rotations and h == w
    if flips or rotate or shift > 0:
        fh = _rand(b, generator, dev) < 0.5 if flips else None
        fv = _rand(b, generator, dev) < 0.5 if flips else None
        tr = _rand(b, generator, dev) < 0.5 if rotate else None
        rows = torch.arange(h, device=dev).expand(b, h)  # (B, H): the padded crop's source row per output row
        cols = torch.arange(w, device=dev).expand(b, w)
        if shift > 0:
            off = (_rand(2 * b, generator, dev) * (2 * shift + 1)).long().clamp_(max=2 * shift).view(2, b)
            rows = _reflect(rows + (off[0, :, None] - shift), h)
            cols = _reflect(cols + (off[1, :, None] - shift), w)
        # output (i, j) reads the flipped-and-transposed image at (rows[i], cols[j]), i.e. the input at
        # (src_row, src_col) with (a, b) = transpose ? (cols[j], rows[i]) : (rows[i], cols[j]),
        # src_row = v-flip ? H-1-a : a, src_col = h-flip ? W-1-b : b (H == W whenever transposing)
        src_r_rows, src_r_cols = _flipped(fv, h, rows, cols)
        src_c_rows, src_c_cols = _flipped(fh, w, rows, cols)
        # flat index = a per-row term + a per-column term: chosen per sample on the (B, H) and (B, W) vectors,
        # so that only one (B, H, W) int64 tensor is made (the gather's index)
        row_term, col_term = src_r_rows * w, src_c_cols
        if tr is not None:
            row_term = torch.where(tr[:, None], src_c_rows, row_term)
            col_term = torch.where(tr[:, None], src_r_cols * w, col_term)
        index = (row_term[:, :, None] + col_term[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        x = x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)
    if brightness > 0 or contrast > 0:
        x = x.float()
        if x is images:  # float input and no geometric step: work on a copy, never on the caller's tensor
            x = x.clone()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        cf = 1 + contrast * (2 * _rand(b, generator, dev) - 1)
        bf = 1 + brightness * (2 * _rand(b, generator, dev) - 1)
        # (x - m) * c + m * b, in place: out of place it held three float32 copies of the batch at once
        x.sub_(mean).mul_(cf.view(b, 1, 1, 1)).add_(mean * bf.view(b, 1, 1, 1))
        x = x.clamp_(0, 255)
        if out_dtype == torch.uint8:
            return x.round_().to(torch.uint8)
    if x.dtype == out_dtype:
        return x if x is not images else images.clone()
    if out_dtype == torch.uint8:
        return x.round().clamp_(0, 255).to(torch.uint8)
    return x.to(out_dtype)


class GPUBatches:
    """Minibatches ``(normalised float images, targets)`` cut from tensors already on the device.

    Each epoch draws a permutation from a CPU generator seeded with ``(seed, epoch)``
    (the same on every rank, and the same on CPU and GPU), shards it by rank
    (``rank::world_size``; with ``even_shards`` the permutation is first padded by
    wrapping around, or truncated with ``drop_last``, to a multiple of
    ``world_size``, as ``DistributedSampler`` does, so every rank runs the same
    number of steps), and yields batches of ``batch_size``. Iterating advances the
    epoch; call :meth:`set_epoch` to pick one (e.g. on resume).

    Batches are ``float32``, channels-last, normalised ``(x / 255 - mean) / std``,
    optionally augmented (:func:`gpu_augment`, with a generator seeded per epoch and
    rank) and resized to ``out_size`` (bilinear, antialiased when shrinking).

    ``chunk`` batches are prepared (gathered, augmented, resized, normalised) in one
    go and then handed out one at a time. Preparing a batch costs a few dozen small
    operations, each a kernel launch; when a small model's training step is bound by
    launching kernels rather than by the GPU's arithmetic (a ViT-Small at 128 px),
    that host time shows directly in the throughput, and a chunk shares it among its
    batches. The batches, their order and each sample's augmentation distribution are
    the same for every ``chunk``; which random numbers a sample gets is not, so the
    same seed gives a different (equally valid) augmentation per ``chunk``, and
    ``chunk=1`` is the original stream. A chunk holds ``chunk * batch_size`` float32
    images at ``out_size`` (8 x 256 at 224 px: 1.2 GB; preparing it takes about twice
    that at its peak, with the int64 index of the gather), and up to two chunks live at
    once while the last batch of one is still in use as the next is prepared.

    Args:
        images: ``uint8`` ``(N, 3, H, W)`` on the device.
        targets: ``(N,)`` (``int64`` node indices) on the device.
        batch_size: samples per batch (per rank).
        shuffle: a new permutation each epoch (else the index order).
        drop_last: drop the last incomplete batch (and, with ``even_shards``, truncate
            instead of pad).
        augment: apply :func:`gpu_augment`.
        seed: seed of the permutations and augmentations.
        rank, world_size: this process's shard (DDP).
        out_size: side of the yielded images, for square ones (default: the stored size).
        mean, std: per-channel normalisation, in ``[0, 1]`` units.
        indices: optional integer positions of ``images`` to iterate (e.g. the train split; not a mask,
            bool or uint8, which is refused).
        even_shards: equal-sized shards (training); ``False`` gives disjoint shards of
            sizes differing by at most one (exact evaluation).
        augment_options: keyword arguments for :func:`gpu_augment`.
        chunk: batches prepared per call (see above; default 1).

    Raises:
        ValueError: shapes, dtypes or options that do not fit.

    Examples:
        >>> imgs = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
        >>> batches = GPUBatches(imgs, torch.arange(10), 4, shuffle=True, drop_last=False, augment=True, seed=0)
        >>> [tuple(x.shape) for x, _ in batches], len(batches)
        ([(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)], 3)
        >>> chunked = GPUBatches(imgs, torch.arange(10), 4, shuffle=True, drop_last=False, augment=True, chunk=2)
        >>> [tuple(x.shape) for x, _ in chunked]  # prepared as 8 + 2 images, handed out as 4 + 4 + 2
        [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        augment: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        out_size: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        indices: torch.Tensor | None = None,
        even_shards: bool = True,
        augment_options: dict | None = None,
        chunk: int = 1,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(
                f"images: expected a uint8 (N, C, H, W) tensor, got {images.dtype} of shape {tuple(images.shape)}. "
                "Decode with examples.leukemia.pack.load_pack."
            )
        if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
            raise ValueError(f"targets: expected shape ({images.shape[0]},), got {tuple(targets.shape)}.")
        if targets.dtype != torch.int64:
            raise ValueError(
                f"targets: expected int64 node indices, got {targets.dtype}; pass targets.long() if they are "
                "whole numbers."
            )
        if targets.device != images.device:
            raise ValueError(f"targets: on {targets.device} but images on {images.device}; move both to one device.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}.")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(
                f"rank, world_size: expected 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}."
            )
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk: expected a positive int (batches prepared per call), got {chunk!r}.")
        if out_size is not None and (isinstance(out_size, bool) or not isinstance(out_size, int) or out_size < 1):
            raise ValueError(f"out_size: expected a positive int or None, got {out_size!r}.")
        if out_size is not None and images.shape[-2] != images.shape[-1]:
            raise ValueError(
                f"out_size: resizing is for square images (it would stretch these), got images of "
                f"{images.shape[-2]} x {images.shape[-1]} px; pack them square or leave out_size out."
            )
        c = images.shape[1]
        if len(mean) != c or len(std) != c or min(std) <= 0:
            raise ValueError(f"mean, std: expected {c} values each (std > 0), got {tuple(mean)} and {tuple(std)}.")
        if indices is None:
            indices = torch.arange(images.shape[0], device=images.device)
        else:
            indices = torch.as_tensor(indices)
            if indices.numel() == 0:  # torch.as_tensor([]) is float32: an empty split is still a split
                indices = indices.long()
            # uint8 too: the masks of older torch; read as positions, a 0/1 mask picks images 0 and 1 again and again
            if indices.dtype in (torch.bool, torch.uint8) or indices.is_floating_point() or indices.is_complex():
                fix = " (a mask? pass mask.nonzero().flatten())" if indices.dtype in (torch.bool, torch.uint8) else ""
                raise ValueError(f"indices: expected integer positions into images, got a {indices.dtype} tensor{fix}.")
            indices = indices.to(device=images.device, dtype=torch.int64)
            if indices.ndim != 1 or (
                indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= images.shape[0])
            ):
                raise ValueError(f"indices: expected a 1-D int tensor of values in [0, {images.shape[0]}).")
        self.images, self.targets, self.indices = images, targets, indices
        self.batch_size, self.shuffle, self.drop_last, self.augment = batch_size, shuffle, drop_last, augment
        self.seed, self.rank, self.world_size, self.even_shards = int(seed), rank, world_size, even_shards
        self.out_size, self.chunk = out_size, chunk
        self.augment_options = dict(augment_options or {})
        std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)  # (x / 255 - mean) / std == x * scale + shift
        self._shift = -mean_t / std_t
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation and augmentations of ``epoch`` for the next iteration."""
        self.epoch = int(epoch)

    @property
    def shard_size(self) -> int:
        """Samples this rank sees per epoch (before dropping an incomplete last batch)."""
        n, w = len(self.indices), self.world_size
        if not self.even_shards:
            return len(range(self.rank, n, w))
        return n // w if self.drop_last else math.ceil(n / w)

    def __len__(self) -> int:
        m = self.shard_size
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def shard(self, epoch: int | None = None) -> torch.Tensor:
        """The indices (into ``images``) this rank visits in ``epoch`` (default: the current one), in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        n, w = len(self.indices), self.world_size
        if self.shuffle:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch))
            order = torch.randperm(n, generator=g).to(self.indices.device)
        else:
            order = torch.arange(n, device=self.indices.device)
        if self.even_shards and w > 1:
            if self.drop_last:
                order = order[: n // w * w]
            elif n % w and n:
                pad = w - n % w
                order = torch.cat([order, order.repeat(math.ceil(pad / n))[:pad]])
        return self.indices[order[self.rank :: w]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        mine = self.shard(epoch)
        gen = None
        if self.augment:
            gen = torch.Generator(device=self.images.device).manual_seed(_mix(self.seed, epoch, self.rank + 1))
        nb, bs = len(self), self.batch_size
        for first in range(0, nb, self.chunk):
            n = min(self.chunk, nb - first)  # batches in this chunk (the last may be short)
            idx = mine[first * bs : (first + n) * bs]
            x, y = self._prepare(self.images[idx], gen), self.targets[idx]
            for k in range(n):  # views of the chunk, channels-last like it
                yield x[k * bs : (k + 1) * bs], y[k * bs : (k + 1) * bs]

    def _prepare(self, batch: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        x = gpu_augment(batch, gen, dtype=torch.float32, **self.augment_options) if self.augment else batch.float()
        if self.out_size is not None and self.out_size != x.shape[-1]:
            shrink = self.out_size < x.shape[-1]
            x = F.interpolate(
                x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False, antialias=shrink
            )
        x = x.contiguous(memory_format=torch.channels_last)
        return x.mul_(self._scale).add_(self._shift)


def _mix(*values: int) -> int:
    # a simple deterministic hash of a few ints into a 63-bit seed (no Python hash randomisation)
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF
