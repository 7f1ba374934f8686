"""Copies between host and device that never wait for the work queued on the device.

The server launches a step while the one before it still runs on the GPU, so that the host's
work for one step overlaps the device's for the other. A plain copy from pageable host memory
(`torch.tensor(..., device="cuda")`, `tensor.to("cuda")`) or to it (`tensor.cpu()`) synchronises
the CUDA stream: it would wait for that step as well. These copy through pinned memory instead.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(data: np.ndarray | list, device: torch.device) -> torch.Tensor:
    """`data` (an array, or a list of numbers) as a tensor on `device`, copied behind the
    device's queued work rather than after waiting for it."""
    tensor = torch.as_tensor(data)
    if device.type != "cuda":
        return tensor.to(device)
    # the caching host allocator keeps the pinned block until the copy is done
    return tensor.pin_memory().to(device, non_blocking=True)


class HostCopy:
    """Device tensors on their way to the host: the copies are queued behind the work that
    computes them, and `get` waits for that work only, not for what was queued after it."""

    def __init__(self, tensors: list[torch.Tensor]):
        if not tensors or tensors[0].device.type != "cuda":
            self._tensors, self._copied = tensors, None
            return
        self._tensors = [
            torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
            for t in tensors
        ]
        self._copied = torch.cuda.Event()
        self._copied.record(torch.cuda.current_stream(tensors[0].device))  # where they copy

    def get(self) -> list[torch.Tensor]:
        if self._copied is not None:
            self._copied.synchronize()
        return self._tensors
