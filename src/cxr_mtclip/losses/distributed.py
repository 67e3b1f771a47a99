"""All-gathers along the batch dimension that keep the local shard's gradient (global-batch negatives).

See the package docstring of `cxr_mtclip.losses` for how this interacts with DDP's gradient averaging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor




def _rank_and_world_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_sizes(local_size: int, device: torch.device) -> list[int]:
    _, world_size = _rank_and_world_size()
    size = torch.tensor([local_size], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_cat(tensor: Tensor, sizes: Sequence[int]) -> Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 (no autograd); shards may differ in length."""
    tensor = tensor.detach()
    original_dtype = tensor.dtype
    if original_dtype == torch.bool:
        tensor = tensor.to(torch.uint8)  # not every backend reduces/gathers bool
    longest = max(sizes)
    if tensor.shape[0] < longest:
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, padding], dim=0)
    tensor = tensor.contiguous()
    shards = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(shards, tensor)
    gathered = torch.cat([shard[:size] for shard, size in zip(shards, sizes)], dim=0)
    return gathered.to(original_dtype)


class _GatherKeepLocalGrad(torch.autograd.Function):
    """All-gather whose backward returns ``world_size *`` the gradient of the local slice."""

    @staticmethod
    def forward(ctx, tensor: Tensor, sizes: list[int], rank: int) -> Tensor:  # type: ignore[override]
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        ctx.world_size = len(sizes)
        return _all_gather_cat(tensor, sizes)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        return grad_output[ctx.start : ctx.stop] * ctx.world_size, None, None


def _gather_with_grad(tensor: Tensor, sizes: list[int]) -> Tensor:
    rank, _ = _rank_and_world_size()
    return _GatherKeepLocalGrad.apply(tensor, sizes, rank)


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All-gather ``tensor`` along dim 0 from every rank, keeping the autograd graph of the local shard.

    Returns ``tensor`` unchanged when ``torch.distributed`` is not initialised or ``world_size == 1``.
    Other ranks' shards are constants; the local shard's gradient is ``world_size`` times the
    gradient of the gathered slice, which together with DDP's gradient averaging reproduces the
    single-process gradients, *provided every rank computes the same loss from the gathered tensor*
    (see the module docstring). Shards may have different lengths.

    Example:
        >>> gather_with_grad(torch.ones(2, 3)).shape  # single process: unchanged
        torch.Size([2, 3])
    """
    _, world_size = _rank_and_world_size()
    if world_size == 1:
        return tensor
    return _gather_with_grad(tensor, _gather_sizes(tensor.shape[0], tensor.device))


def gather_no_grad(tensor: Tensor) -> Tensor:
    """All-gather ``tensor`` along dim 0 from every rank without autograd (e.g. labels).

    Returns ``tensor`` unchanged when ``torch.distributed`` is not initialised or ``world_size == 1``.

    Example:
        >>> gather_no_grad(torch.tensor([0, 1])).tolist()  # single process: unchanged
        [0, 1]
    """
    _, world_size = _rank_and_world_size()
    if world_size == 1:
        return tensor
    return _all_gather_cat(tensor, _gather_sizes(tensor.shape[0], tensor.device))


