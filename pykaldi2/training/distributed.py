"""One distributed code path for ``torchrun`` (torch.distributed) and ``horovodrun`` (Horovod).

The launcher is read from the environment:

* ``horovodrun -np N ...`` sets ``HOROVOD_RANK``/``HOROVOD_SIZE`` → Horovod;
* ``torchrun --nproc_per_node N ...`` sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` →
  torch.distributed (NCCL on CUDA, gloo on CPU);
* neither → a single process.

The trainer never wraps the model in DDP or Horovod's optimizer: after ``backward()`` it calls
:meth:`Dist.allreduce_grads`, which averages gradients across ranks (bucketed, flattened), so
both launchers run the same update and gradient clipping sees the reduced gradient.

    >>> dist = Dist.from_env()
    >>> dist.broadcast_parameters(model)          # identical start on every rank
    >>> loss.backward(); dist.allreduce_grads(model.parameters()); clip(...); opt.step()
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

#: Gradients are reduced in flat buckets of about this many elements.
BUCKET_NUMEL = 8 * 1024 * 1024


def launcher_from_env(env: dict[str, str] | None = None) -> str:
    """``"horovod"``, ``"torch"`` or ``"single"`` from the launcher's environment variables."""
    env = os.environ if env is None else env
    if "HOROVOD_RANK" in env or "HOROVOD_SIZE" in env:
        return "horovod"
    if "WORLD_SIZE" in env and "RANK" in env:
        return "torch"
    return "single"


@dataclass
class Dist:
    """The process group this process belongs to.

    Attributes: ``backend`` ("single" | "torch" | "horovod"), ``rank``, ``world_size``,
    ``local_rank``, ``device`` (the device this rank trains on).
    """

    backend: str = "single"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_env(cls, use_cuda: bool | None = None) -> Dist:
        """Initialise the process group chosen by the launcher (idempotent)."""
        if use_cuda is None:
            use_cuda = torch.cuda.is_available()
        launcher = launcher_from_env()
        if launcher == "horovod":
            try:
                import horovod.torch as hvd
            except ImportError as e:
                raise RuntimeError(
                    "started by horovodrun but horovod.torch is not importable; "
                    "build it with `make horovod` (see README)"
                ) from e
            hvd.init()
            rank, size, local = hvd.rank(), hvd.size(), hvd.local_rank()
        elif launcher == "torch":
            import torch.distributed as td

            local = int(os.environ.get("LOCAL_RANK", 0))
            if use_cuda:
                torch.cuda.set_device(local)
            if not td.is_initialized():
                td.init_process_group(backend="nccl" if use_cuda else "gloo")
            rank, size = td.get_rank(), td.get_world_size()
        else:
            rank, size, local = 0, 1, 0
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        return cls(launcher, rank, size, local, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives -------------------------------------------------------------------------
    def _allreduce_(self, t: torch.Tensor, average: bool) -> torch.Tensor:
        """In place sum/average of ``t`` over ranks."""
        if self.world_size == 1:
            return t
        if self.backend == "horovod":
            import horovod.torch as hvd

            op = hvd.Average if average else hvd.Sum
            t.copy_(hvd.allreduce(t, op=op))
            return t
        import torch.distributed as td

        td.all_reduce(t, op=td.ReduceOp.SUM)
        if average:
            t.div_(self.world_size)
        return t

    def allreduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average ``p.grad`` over ranks for every parameter with a gradient.

        A parameter with no gradient on this rank takes part with zeros, so every rank issues
        the same collectives in the same order (a rank whose batch skipped a branch cannot hang
        the others).
        """
        if self.world_size == 1:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        numel = 0
        for p in params:
            bucket.append(p.grad)
            numel += p.grad.numel()
            if numel >= BUCKET_NUMEL:
                self._reduce_bucket(bucket)
                bucket, numel = [], 0
        if bucket:
            self._reduce_bucket(bucket)

    def _reduce_bucket(self, grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._allreduce_(flat, average=True)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average the floating-point buffers of ``module`` (BatchNorm running statistics) over
        ranks, in place. Each rank's running statistics follow its own batches; the trainer
        averages them before validation and before a checkpoint, so that every rank evaluates
        and rank 0 saves the same model (Kaldi averages the models of its parallel jobs,
        batch-norm statistics included; DDP copies rank 0's instead). Integer buffers
        (``num_batches_tracked``) are left alone. Parameters are not touched: they are equal on
        all ranks already."""
        if self.world_size == 1:
            return
        bufs = [b for b in module.buffers() if b.is_floating_point()]
        if bufs:
            self._reduce_bucket(bufs)

    def allreduce_scalars(self, values: list[float], average: bool = False) -> list[float]:
        """Sum (or average) a few Python floats over ranks (loss totals, frame counts)."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._coll_device())
        self._allreduce_(t, average)
        return t.tolist()

    def broadcast_parameters(self, module: torch.nn.Module, root: int = 0) -> None:
        """Copy ``root``'s parameters and buffers to every rank."""
        if self.world_size == 1:
            return
        tensors = list(module.state_dict().values())
        if self.backend == "horovod":
            import horovod.torch as hvd

            hvd.broadcast_parameters(module.state_dict(), root_rank=root)
            return
        import torch.distributed as td

        for t in tensors:
            td.broadcast(t, src=root)

    def barrier(self) -> None:
        if self.world_size == 1:
            return
        if self.backend == "horovod":
            import horovod.torch as hvd

            hvd.allreduce(torch.zeros(1), name="barrier")
            return
        import torch.distributed as td

        td.barrier()

    def _coll_device(self) -> torch.device:
        # NCCL reduces CUDA tensors only; gloo and Horovod take CPU tensors.
        return (
            self.device
            if self.backend == "torch" and self.device.type == "cuda"
            else torch.device("cpu")
        )

    def shutdown(self) -> None:
        if self.backend == "torch":
            import torch.distributed as td

            if td.is_initialized():
                # Every rank reaches the barrier before any tears gloo down: destroying the
                # group while a peer still talks to it aborts ("terminate called ...").
                td.barrier()
                td.destroy_process_group()
