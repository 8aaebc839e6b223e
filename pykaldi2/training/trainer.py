"""The one training loop, used by every criterion (CE, LF-MMI, lattice MMI/sMBR, RNN-T).

A criterion is a :class:`Task`: ``compute_loss(model, batch) -> LossOutput`` where
``LossOutput.loss`` is the *sum* of the objective over the batch's ``count`` units (frames,
tokens, utterances). The trainer accumulates ``accum_grad`` batches, all-reduces the gradients
across ranks and divides them by the global count, so N ranks x batch B make exactly the update
1 rank x batch N*B makes. Then: gradient clipping (after the all-reduce), optimizer step, LR
schedule. Floating-point buffers (BatchNorm running statistics, which follow each rank's own
batches) are averaged over ranks before validation and before every checkpoint.

Per step: AMP (bf16, or fp16 with a GradScaler) on CUDA; NaN/inf losses are skipped and counted,
and training stops with an error past ``max_bad_batches``; rank 0 logs to tensorboardX and shows
a tqdm bar; a checkpoint every ``checkpoint_every`` steps and at each epoch end holds the model,
optimizer, schedule, step, epoch and position within the epoch. RNGs are reseeded from
``(seed, step, rank)`` before every step, so a run resumed from any checkpoint repeats the
random draws (dropout, masks) of an uninterrupted one exactly.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pykaldi2.losses.output import LossOutput
from pykaldi2.training import checkpoint as ckpt
from pykaldi2.training.distributed import Dist
from pykaldi2.training.schedule import LrSchedule, ScheduleConfig
from pykaldi2.utils.config import ConfigMixin, option
from pykaldi2.utils.errors import Pykaldi2Error
from pykaldi2.utils.log import get_logger, progress

log = get_logger(__name__)


class Task(Protocol):
    def compute_loss(self, model: torch.nn.Module, batch: Any) -> LossOutput: ...


@dataclass
class TrainerConfig(ConfigMixin):
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd"
    lr: float = option(1e-3, gt=0)
    momentum: float = option(0.9, ge=0, lt=1)
    weight_decay: float = option(0.0, ge=0)
    max_epochs: int = option(10, ge=0)
    max_steps: int = option(0, ge=0)  # 0: no limit
    accum_grad: int = 1
    grad_clip: float = option(5.0, ge=0)  # 0: off
    amp: bool = True  # only takes effect on CUDA
    checkpoint_every: int = option(1000, ge=0)
    keep_last: int = option(5, ge=1)
    log_every: int = option(50, ge=0)
    seed: int = 0
    max_bad_batches: int = option(20, ge=0)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        self.build_sections()
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"TrainerConfig.optimizer: unknown {self.optimizer!r}")
        if self.accum_grad < 1:
            raise ValueError("TrainerConfig.accum_grad must be >= 1")


def make_optimizer(
    cfg: TrainerConfig, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    opt = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return opt(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def close_tensorboard_after_failure(writer) -> None:
    """Close a tensorboardX ``SummaryWriter`` after training failed. When its final flush
    cannot be written (the disk is full), the pending events are dropped instead: each event
    file's descriptor is pointed at /dev/null, its writer thread stopped and the file closed,
    so that tensorboardX prints no tracebacks at exit. The events only mirror
    ``log/*.jsonl``, which keeps every complete line. (Reaches into tensorboardX: FileWriter ->
    EventFileWriter -> EventsWriter -> RecordWriter -> its file.)"""
    import contextlib

    try:
        writer.close()
        return
    except Exception:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fw in list((getattr(writer, "all_writers", None) or {}).values()):
            ew = fw.event_writer
            with contextlib.suppress(Exception):
                events = ew._ev_writer._py_recordio_writer._writer
                os.dup2(devnull, events.fileno())
                ew._worker.stop()
                events.close()
            ew._closed = True
    finally:
        os.close(devnull)


def _reseed(seed: int, step: int, rank: int) -> None:
    s = np.random.SeedSequence([seed, step, rank]).generate_state(2)
    random.seed(int(s[0]))
    np.random.seed(int(s[1]))
    torch.manual_seed(int(s[0]) << 1 | 1)


class Trainer:
    """Train ``model`` on ``task`` with batches from ``train_loader``.

    ``train_loader`` is any iterable of batches whose ``batch_sampler`` (or ``sampler``) has
    ``set_epoch`` and ``load_state_dict`` (e.g. a DataLoader over
    :class:`pykaldi2.data.samplers.BucketBatchSampler`); the trainer counts consumed batches
    itself, so prefetching workers do not shift the resume point.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        cfg: TrainerConfig,
        exp_dir: str | os.PathLike,
        *,
        dist: Dist | None = None,
        model_config: dict | None = None,
        model_config_defaults: dict | None = None,
        valid_fn: Callable[[torch.nn.Module], float] | None = None,
        after_step: Callable[[torch.nn.Module, int], None] | None = None,
    ) -> None:
        self.dist = dist or Dist()
        self.model = model.to(self.dist.device)
        self.task, self.cfg = task, cfg
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.model_config = model_config or {}
        self.model_config_defaults = model_config_defaults or {}
        self.valid_fn, self.after_step = valid_fn, after_step
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.schedule = LrSchedule(cfg.schedule)
        self.step = 0
        self.epoch = 0
        self.batches_done = 0  # batches of the current epoch consumed
        self.bad_batches = 0
        cuda = self.dist.device.type == "cuda"
        self.amp_dtype = None
        if cfg.amp and cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.writer = None
        if self.dist.is_main:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(self.exp_dir / "log" / "tensorboard"))

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "model_config": self.model_config,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "bad_batches": self.bad_batches,
            "trainer_config": self.cfg.to_dict(),
        }

    def save(self) -> None:
        self.dist.average_buffers(self.model)  # BatchNorm statistics: the mean over ranks
        if self.dist.is_main:
            ckpt.save_step_checkpoint(
                self.ckpt_dir, self.step, self.state_dict(), self.cfg.keep_last
            )
        self.dist.barrier()

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load ``path`` or the latest checkpoint in the exp dir; False when there is none.
        Temp files of a checkpoint write that was killed are removed first (rank 0)."""
        if self.dist.is_main:
            for p in ckpt.remove_stale_temps(self.ckpt_dir, r"ckpt-\d+\.pt|latest"):
                log.info("removed %s (a checkpoint write that did not finish)", p)
        path = Path(path) if path else ckpt.latest_checkpoint(self.ckpt_dir)
        if path is None:
            return False
        state = ckpt.load_checkpoint(path, map_location=self.dist.device)
        ckpt.check_model_config(
            state.get("model_config", {}), self.model_config, path, self.model_config_defaults
        )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batches_done, self.bad_batches = state["batches_done"], state["bad_batches"]
        log.info(
            "resumed from %s (step %d, epoch %d, batch %d)",
            path,
            self.step,
            self.epoch,
            self.batches_done,
        )
        return True

    # -- the loop ------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        lr = self.cfg.lr * self.schedule.factor(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_factor", 1.0)  # a group may carry its own LR factor
        return lr

    def _forward(self, batch: Any) -> LossOutput | None:
        ctx = (
            torch.autocast(self.dist.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            out = self.task.compute_loss(self.model, batch)
        if not torch.isfinite(out.loss.detach()).all():
            self.bad_batches += 1
            log.warning(
                "non-finite loss at step %d (bad batches so far: %d)", self.step, self.bad_batches
            )
            if self.bad_batches > self.cfg.max_bad_batches:
                raise Pykaldi2Error(
                    f"{self.bad_batches} batches with NaN/inf loss (limit max_bad_batches="
                    f"{self.cfg.max_bad_batches}); Fix: lower the learning rate, check features "
                    "and targets for NaN, or raise the limit"
                )
            return None
        return out

    def _optimizer_step(self, count: float) -> tuple[float, float]:
        """All-reduce gradients, scale by 1/global count, clip, step. Returns (count, grad norm)."""
        total = self.dist.allreduce_scalars([count])[0]
        if total <= 0:
            self.optimizer.zero_grad(set_to_none=True)
            return 0.0, 0.0
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.dist.allreduce_grads(params)  # averages over ranks
        scale = self.dist.world_size / total
        for p in params:
            if p.grad is not None:
                p.grad.mul_(scale)
        norm = 0.0
        if self.cfg.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total, norm

    def _sampler(self, loader: Any) -> Any:
        for attr in ("batch_sampler", "sampler"):
            s = getattr(loader, attr, None)
            if s is not None and hasattr(s, "set_epoch"):
                return s
        return loader if hasattr(loader, "set_epoch") else None

    def fit(self, train_loader: Any) -> dict[str, float]:
        """Train until ``max_epochs``/``max_steps``; returns the last epoch's average stats.
        When training fails (a full disk, say), the tensorboard writer is closed first (see
        :func:`close_tensorboard_after_failure`) and the error passes on."""
        try:
            return self._fit(train_loader)
        except BaseException:
            if self.writer is not None:
                close_tensorboard_after_failure(self.writer)
            raise

    def _fit(self, train_loader: Any) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        sampler = self._sampler(train_loader)
        summary: dict[str, float] = {}
        while self.epoch < cfg.max_epochs and not self._done():
            if sampler is not None:
                sampler.set_epoch(self.epoch)
                if self.batches_done and hasattr(sampler, "load_state_dict"):
                    sampler.load_state_dict(
                        {"epoch": self.epoch, "batches_done": self.batches_done}
                    )
            sums: dict[str, float] = {"loss": 0.0, "count": 0.0}
            acc_count, micro = 0.0, 0
            bar = progress(
                desc=f"epoch {self.epoch}",
                unit="batch",
                disable=not self.dist.is_main or os.environ.get("PYKALDI2_NO_PROGRESS") == "1",
            )
            for batch in train_loader:
                if micro == 0:
                    _reseed(cfg.seed, self.step, self.dist.rank)
                out = self._forward(batch)
                if out is not None:
                    self.scaler.scale(out.loss).backward()
                    acc_count += out.count
                    sums["loss"] += float(out.loss.detach())
                    sums["count"] += out.count
                    for k, v in out.stats.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                micro += 1
                self.batches_done += 1
                bar.update(1)
                if micro < cfg.accum_grad:
                    continue
                lr = self._set_lr()
                _, norm = self._optimizer_step(acc_count)
                acc_count, micro = 0.0, 0
                self.step += 1
                if self.after_step is not None:
                    self.after_step(self.model, self.step)
                if self.dist.is_main and self.step % cfg.log_every == 0 and sums["count"] > 0:
                    avg = sums["loss"] / sums["count"]
                    bar.set_postfix(loss=f"{avg:.4f}", lr=f"{lr:.2e}")
                    self.writer.add_scalar("train/loss", avg, self.step)
                    self.writer.add_scalar("train/lr", lr, self.step)
                    self.writer.add_scalar("train/grad_norm", norm, self.step)
                if cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0:
                    self.save()
                if self._done():
                    break
            bar.close()
            if micro > 0:  # a partial accumulation at the end of the epoch still counts
                self._set_lr()
                self._optimizer_step(acc_count)
                self.step += 1
            totals = self.dist.allreduce_scalars(list(sums.values()))
            summary = dict(zip(sums.keys(), totals))
            count = max(summary.pop("count"), 1e-12)
            summary = {k: v / count for k, v in summary.items()}
            if self._done() and self.batches_done < self._epoch_len(sampler):
                break  # stopped mid-epoch by max_steps: the checkpoint keeps the position
            self.epoch += 1
            self.batches_done = 0
            if self.valid_fn is not None:
                self.dist.average_buffers(self.model)
                vloss = self.valid_fn(self.model)
                self.model.train()
                summary["valid_loss"] = vloss
                if self.schedule.on_validation(vloss):
                    log.info("validation loss %.4f did not improve enough: halving the LR", vloss)
                if self.writer:
                    self.writer.add_scalar("valid/loss", vloss, self.step)
            if self.dist.is_main:
                log.info(
                    "epoch %d done: %s",
                    self.epoch - 1,
                    ", ".join(f"{k}={v:.4f}" for k, v in summary.items()),
                )
            self.save()
        self.save()
        if self.writer:
            self.writer.flush()
        return summary

    def _done(self) -> bool:
        return self.cfg.max_steps > 0 and self.step >= self.cfg.max_steps

    @staticmethod
    def _epoch_len(sampler: Any) -> int:
        try:
            return len(sampler)
        except TypeError:
            return math.inf  # type: ignore[return-value]


def evaluate(model, loader, task, dist) -> dict[str, float]:
    """Frame CE loss and accuracy over ``loader`` (summed over ranks): {"loss", "acc", "frames"}."""
    import torch

    model.eval()
    loss = correct = count = 0.0
    with torch.no_grad():
        for batch in loader:
            out = task.compute_loss(model, batch)
            loss += float(out.loss)
            correct += out.stats.get("correct", 0.0)
            count += out.count
    loss, correct, count = dist.allreduce_scalars([loss, correct, count])
    count = max(count, 1e-12)
    return {"loss": loss / count, "acc": correct / count, "frames": count}
