"""Slow, obviously-correct reference for ``examples.leukemia.gpu_augment``.

One sample at a time, each step as a plain tensor operation on that sample: the
horizontal flip, the vertical flip, the transpose, a reflect-padded copy and a
slice of it, then the brightness/contrast formula. It draws its random numbers
from the generator in the order the documented contract gives (horizontal
flips, vertical flips, transposes, the ``2B`` shift offsets, contrast,
brightness: each a ``torch.rand`` of the batch, drawn only when its step is
on), so that the same generator state gives the same augmentation as the
vectorised function, which builds one gather index instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_augment(
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
    b, _, h, w = images.shape
    dev = images.device
    shift = round(max_shift * min(h, w)) if isinstance(max_shift, float) else int(max_shift)

    def draw(n: int) -> list[float]:
        return torch.rand(n, generator=generator, device=dev).tolist()

    fh = draw(b) if flips else [1.0] * b
    fv = draw(b) if flips else [1.0] * b
    tr = draw(b) if rotations and h == w else [1.0] * b
    off = draw(2 * b) if shift > 0 else [0.0] * (2 * b)
    photometric = brightness > 0 or contrast > 0
    cf = draw(b) if photometric else [0.5] * b
    bf = draw(b) if photometric else [0.5] * b
    outs = []
    for k in range(b):
        x = images[k].double()
        if fh[k] < 0.5:
            x = x.flip(2)
        if fv[k] < 0.5:
            x = x.flip(1)
        if tr[k] < 0.5:
            x = x.transpose(1, 2)
        if shift > 0:
            oy = min(int(off[k] * (2 * shift + 1)), 2 * shift)
            ox = min(int(off[b + k] * (2 * shift + 1)), 2 * shift)
            padded = F.pad(x[None], (shift, shift, shift, shift), mode="reflect")[0]
            x = padded[:, oy : oy + h, ox : ox + w]
        if photometric:
            m = x.mean()
            c = 1 + contrast * (2 * cf[k] - 1)
            bb = 1 + brightness * (2 * bf[k] - 1)
            x = ((x - m) * c + m * bb).clamp(0, 255)
        outs.append(x)
    out = torch.stack(outs) if outs else images.double()
    out_dtype = images.dtype if dtype is None else dtype
    if out_dtype == torch.uint8:
        return out.round().to(torch.uint8)
    return out.to(out_dtype)
