"""NumPy arrays and torch tensors on the way in and out of the reconstruction functions.

Every method accepts either and computes in torch on the requested device (CPU or CUDA); NumPy in gives
NumPy out, so notebooks and the CLI never handle tensors unless they want to.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def to_tensor(values: ArrayLike, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` as a tensor on ``device`` (None: where a tensor is, the CPU for NumPy) with ``dtype`` (None:
    its own), sharing memory when it can. Callers never modify the result in place: it may be the caller's."""
    if not isinstance(values, torch.Tensor):
        array = np.ascontiguousarray(values)
        values = torch.from_numpy(array if array.flags.writeable else array.copy())
    return values.to(device=values.device if device is None else device, dtype=dtype or values.dtype)


def like_input(result: torch.Tensor, template: ArrayLike) -> ArrayLike:
    """``result`` as NumPy (on the CPU) when ``template`` was NumPy, else as the tensor it is."""
    return result if isinstance(template, torch.Tensor) else result.cpu().numpy()
