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
    >>> dist.shutdown()                           # every rank done: the group is destroyed

Several commands in one process (a script calling ``train_ce`` then ``train_chain``, or
tests/unit/training/dist_cli_worker.py) each create and destroy a torch.distributed group.
torch cannot re-create its default group on the same store: under torchrun every rank's
store is the launcher's one TCPStore for the whole launch, torch resets its group counter on
destroy, so the new group takes the old one's keys (``default_pg/0/...``) and gloo's
connectFullMesh can read a peer's address from the destroyed group: the ranks then wait on
each other in the rendezvous or the first collective until gloo's 30 min timeout
(pytorch/pytorch#55967, #74666). So each group after the first is created on the launcher's
store under a prefix of its own (``pykaldi2/<n>``); every rank counts the same n, since every
rank runs the same commands.

``PYKALDI2_STACKS_DIR``: when set, every rank writes all its threads' Python stacks to
``DIR/rank<R>.stacks`` on SIGUSR1 (``kill -USR1 PID``, the pid on the file's first line: where
a hung rank waits); the tests' launcher uses it on a timeout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

#: Gradients are reduced in flat buckets of about this many elements.
BUCKET_NUMEL = 8 * 1024 * 1024

#: torch.distributed groups :meth:`Dist.from_env` has created in this process.
_torch_groups_created = 0


def _init_torch_group(backend: str) -> None:
    """``init_process_group`` from the launcher's environment (env://); the second and later
    groups of this process on a store prefix of their own (see the module docstring)."""
    global _torch_groups_created
    import torch.distributed as td

    n = _torch_groups_created
    if n == 0:
        td.init_process_group(backend=backend)
    else:
        store, rank, size = next(td.rendezvous("env://"))
        store = td.PrefixStore(f"pykaldi2/{n}", store)
        td.init_process_group(backend=backend, store=store, rank=rank, world_size=size)
    _torch_groups_created = n + 1


def _register_stack_dump(rank: int) -> None:
    """With ``PYKALDI2_STACKS_DIR`` set: SIGUSR1 writes every thread's stack to
    ``DIR/rank<rank>.stacks`` (faulthandler; the process carries on)."""
    out = os.environ.get("PYKALDI2_STACKS_DIR")
    if not out:
        return
    import faulthandler
    import signal

    os.makedirs(out, exist_ok=True)
    f = open(os.path.join(out, f"rank{rank}.stacks"), "w")  # kept open: the handler writes it
    f.write(f"pid {os.getpid()}\n")  # the process to signal
    f.flush()
    faulthandler.register(signal.SIGUSR1, file=f, all_threads=True)


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
    ``local_rank``, ``device`` (the device this rank trains on), ``owns_group`` (this Dist
    created the torch.distributed group, and :meth:`shutdown` destroys it).
    """

    backend: str = "single"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False
    #: the exception being handled when the group was made (see :meth:`shutdown`)
    _exc_at_start: BaseException | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_env(cls, use_cuda: bool | None = None) -> Dist:
        """Initialise the process group chosen by the launcher (idempotent)."""
        if use_cuda is None:
            use_cuda = torch.cuda.is_available()
        launcher = launcher_from_env()
        owns = False
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
                _init_torch_group("nccl" if use_cuda else "gloo")
                owns = True
            rank, size = td.get_rank(), td.get_world_size()
        else:
            rank, size, local = 0, 1, 0
        if launcher != "single":
            _register_stack_dump(rank)
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        return cls(launcher, rank, size, local, device, owns, sys.exc_info()[1])

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
        """The end of a command: every rank waits for the others, then the group this Dist
        created is destroyed (one it found already made is left to its maker). The barrier
        comes first because destroying the group while a peer still talks to it aborts
        ("terminate called ...").

        Called from a ``finally`` while an exception propagates, it does not wait: a barrier
        would meet another rank's collective, or none, and hang; the failing rank destroys its
        group and leaves, so its peers fail on the closed connections and the launcher ends."""
        if self.backend == "torch":
            import torch.distributed as td

            if not td.is_initialized():
                return
            failing = sys.exc_info()[1] not in (None, self._exc_at_start)
            if not failing:
                td.barrier()
            if self.owns_group:
                td.destroy_process_group()
