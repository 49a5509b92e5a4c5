"""Multi-process training: `torchrun --nproc_per_node N -m phfa_cli -- adapt ...`
(the `--` stops torchrun from reading phfa's `--run` as an abbreviation of its `--run-path`).

DistributedDataParallel for the segmentor; the discriminator's gradients are averaged by
hand (its parameters are frozen during the generator's adversarial term, which DDP's
reducer does not allow); each rank reads its own slice of the data stream; rank 0 alone
writes artefacts. NCCL on CUDA, gloo on CPU (tested with 2 CPU processes). The feature
memories stay per rank (each holds samples from the images that rank saw).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init() -> tuple[int, int, torch.device]:
    """(rank, world size, device), initialising the process group when torchrun started us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    return rank(), world_size(), device


def rank() -> int:
    """This process's rank; before `init()`, the one torchrun gave it (0 outside torchrun)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def average_grads(module: torch.nn.Module) -> None:
    """All-reduce and average the gradients of a module that is not wrapped in DDP."""
    if not dist.is_initialized():
        return
    w = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(w)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not dist.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
