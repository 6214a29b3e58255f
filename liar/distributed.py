"""Data-parallel calibration on torch.distributed: every rank calibrates on its share of the batches, the
statistics are summed across ranks before each solve, every rank applies the same reconstruction, and
rank 0 alone writes. gloo on CPU, NCCL on GPU, chosen from the device.

Failure protocol: every collective is preceded by a one-integer "all well?" all-reduce. A rank that fails
joins the next such vote with a failure and re-raises; the others raise `RankFailure` instead of waiting
in a collective the failed rank will never reach. Rank 0 writes atomically, so whatever stops the run
leaves a resumable state. Outside a process group every function here is a no-op.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT = timedelta(minutes=30)  # a collective waits this long for a rank that died without voting


class RankFailure(RuntimeError):
    """Another rank failed; this one stops too."""


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1) if not joined yet; returns this rank's
    device (cuda:LOCAL_RANK on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
        log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    if active() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shutdown(succeeded: bool = True) -> None:
    """Leave the process group. After a successful run all ranks first meet at a barrier, so none tears its
    connections down while a peer still finishes the last collective (CI once saw a rank abort in gloo's
    teardown without it); after a failure the ranks already learned of it through the vote."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if succeeded and active():
        dist.barrier()
    dist.destroy_process_group()


def _vote(ok: bool, device: torch.device) -> bool:
    flag = torch.tensor([0 if ok else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag)
    return int(flag) == 0


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def check() -> None:
    """All ranks confirm they are well; raises RankFailure on all of them if one is not."""
    if active() and not _vote(True, _collective_device()):
        raise RankFailure("another rank failed; see its error above. The finished blocks are kept: rerun the "
                          "same command to resume")


def fail() -> None:
    """Called by a rank that hit an error: joins the next vote as failed (then the caller re-raises)."""
    if active():
        try:
            _vote(False, _collective_device())
        except RuntimeError:
            log.exception("could not tell the other ranks about the failure")


@contextmanager
def step() -> Iterator[None]:
    """One unit of work all ranks finish together: a failure inside votes 'failed' and re-raises here;
    success ends with a vote, so a rank that failed elsewhere stops this one too."""
    try:
        yield
    except RankFailure:
        raise
    except BaseException:
        fail()
        raise
    check()


def all_reduce_(*tensors: torch.Tensor) -> None:
    """Sum tensors over ranks in place, after a vote."""
    if not active():
        return
    check()
    for t in tensors:
        dist.all_reduce(t)


def shard(items: list) -> list:
    """This rank's share of the calibration batches (round robin)."""
    if not active():
        return items
    if len(items) < world_size():
        raise ValueError(f"{len(items)} calibration batches cannot feed {world_size()} ranks; raise --nsamples or "
                         "lower --batch-size so every rank gets at least one batch")
    return items[rank():: world_size()]
