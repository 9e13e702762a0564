"""A dispatch mode that catches host-to-device traffic in code meant to run without any.

The meta device raises on a read-back (``.item()``, ``.cpu()``), but a copy *to* it succeeds: a
per-call ``torch.as_tensor(host_value, device=...)`` would pass a meta test and still make a CUDA
stream wait on pageable host memory. This mode records every operation that mixes a CPU tensor
with tensors on another device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class HostTraffic(TorchDispatchMode):
    """Records ``(op, ...)`` for each operation whose tensors span the CPU and another device."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tensors = [x for x in tree_flatten((args, kwargs or {}, out))[0] if isinstance(x, torch.Tensor)]
        kinds = {x.device.type for x in tensors}
        if "cpu" in kinds and len(kinds) > 1:
            self.ops.append(str(func))
        return out
