"""TDNN-F as Kaldi's chain recipes build it (xconfig ``tdnnf-layer``, mini_librispeech
``run_tdnn_1j.sh``), on unpadded convolutions, with the model's context computed from its layers.

Layers (the xconfig's names)::

    spec-augment   optional (``spec_augment``): Kaldi's spec-augment-layer (frequency band and
                   time masks per sequence, training only; :mod:`pykaldi2.nnet.spec_augment`)
    delta          optional (``input_deltas``): [x, delta, delta-delta] of the input
                   (add-deltas, window 2: 4 frames each side; 1j's delta-layer)
    tdnn1          affine over the splice ``first_context`` -> ReLU -> batchnorm
    tdnnf2...      one per ``time_strides`` entry s: linear to ``bottleneck`` (time offsets
                   -s, 0; semi-orthogonal) -> affine back to ``hidden`` (offsets 0, +s) -> ReLU
                   -> batchnorm [-> dropout], plus ``bypass_scale`` x the layer's input
    prefinal-l     linear to ``prefinal_dim`` (semi-orthogonal)
    prefinal-chain affine to ``hidden`` -> ReLU -> batchnorm -> linear to ``prefinal_dim``
                   (semi-orthogonal) -> batchnorm;  output: affine to ``num_classes`` (raw)
    prefinal-xent, output-xent: the same again for the xent branch (``xent_branch``)

Time: an output frame at input frame t reads input frames ``[t - left_context, t +
right_context]`` (:attr:`Tdnnf.left_context`, :attr:`Tdnnf.right_context`: the sums of the
layers' offsets). With frame subsampling r the outputs are at input frames 0, r, 2r, ...: the
layers up to the last one whose stride is not a multiple of r run on every frame, the rest on
every r-th (a stride-3 layer is then one step). Every convolution is unpadded: an output never
sees a frame that is not data. :meth:`Tdnnf.forward` takes chunks that carry their context
(``context_included=True``: T input frames give ``(T - left - right - 1) // r + 1`` outputs) or
whole sequences, whose first and last frames are then repeated as Kaldi's decoding does at
utterance edges (``ceil(T / r)`` outputs).

Batchnorm is Kaldi's BatchNormComponent (no learned scale or offset, epsilon 0.001; batch
statistics in training, running averages at test time) over the valid frames only: the frames
of a padded batch past a sequence's end never enter the statistics (:class:`MaskedBatchNorm1d`).

The semi-orthogonal constraint is Kaldi's with a floating scale (ConstrainOrthonormalInternal,
``orthonormal-constraint=-1``): for M (rows <= cols), P = M M^T, scale^2 = tr(P P^T) / tr(P),
M <- M - 4 (nu / scale^2) (P - scale^2 I) M with nu = 0.125 (halved when tr(P P^T) rows /
tr(P)^2 > 1.02, again above 1.1). :meth:`Tdnnf.l2_penalty` gives the per-layer l2 terms
(Kaldi's ``l2-regularize`` of each component).

Dimension legend: N sequences, T input frames, T' output frames, F input dim, H hidden,
C num_classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pykaldi2.nnet.spec_augment import SpecAugmentLayer
from pykaldi2.utils.config import ConfigMixin, option

__all__ = ["MaskedBatchNorm1d", "Tdnnf", "TdnnfConfig", "TdnnfLayer", "constrain_orthonormal"]

#: Kaldi's BatchNormComponent epsilon.
BN_EPSILON = 1e-3


@dataclass
class TdnnfConfig(ConfigMixin):
    """Sizes and options; the defaults are run_tdnn_1j.sh's network (without its i-vectors).

    Attributes:
        input_dim, num_classes: feature dim and pdf count (filled in from the data).
        input_deltas: append delta and delta-delta features in the network (1j's delta-layer).
        first_context: the splice of tdnn1, a contiguous range of offsets (1j: ``[0]``, its
            context coming from the delta layer).
        hidden: ``dim`` of every layer (1j: 768).
        bottleneck: ``bottleneck-dim`` of the tdnnf layers (1j: 96).
        time_strides: ``time-stride`` of each tdnnf layer (1j: 1 1 1 0 3 3 3 3 3 3 3 3).
        prefinal_dim: prefinal-l's dim and the prefinal layers' ``small-dim`` (1j: 192).
        bypass_scale: the tdnnf layers' ``bypass-scale`` (0.66).
        dropout: dropout after each tdnnf layer's batchnorm (1j: none).
        subsampling: output frame rate divisor (3 for chain models; 1: one output per frame).
        xent_branch: build prefinal-xent and output-xent (chain training with xent).
        l2: ``l2-regularize`` of tdnn1, the tdnnf, prefinal-l and prefinal layers (1j: 0.03).
        output_l2: ``l2-regularize`` of output and output-xent (1j: 0.015).
        spec_augment: the spec-augment-layer before the delta layer (1j: on; off by default
            so that configs written before it train as they did).
        spec_augment_freq_max_proportion, spec_augment_time_zeroed_proportion,
        spec_augment_time_mask_max_frames: its ``freq-max-proportion`` (1j: 0.5),
            ``time-zeroed-proportion`` (0.2) and ``time-mask-max-frames`` (20).
    """

    input_dim: int = option(40, ge=0)
    num_classes: int = 0
    input_deltas: bool = True
    first_context: list[int] = field(default_factory=lambda: [0])
    hidden: int = option(768, ge=1)
    bottleneck: int = option(96, ge=1)
    time_strides: list[int] = field(default_factory=lambda: [1, 1, 1, 0] + [3] * 8)
    prefinal_dim: int = option(192, ge=1)
    bypass_scale: float = 0.66
    dropout: float = option(0.0, ge=0, lt=1)
    subsampling: int = option(1, ge=1)
    xent_branch: bool = False
    l2: float = option(0.03, ge=0)
    output_l2: float = option(0.015, ge=0)
    spec_augment: bool = False
    spec_augment_freq_max_proportion: float = option(0.5, gt=0, lt=1)
    spec_augment_time_zeroed_proportion: float = option(0.2, gt=0, lt=1)
    spec_augment_time_mask_max_frames: int = option(20, ge=2)

    def __post_init__(self) -> None:
        if self.num_classes <= 0:
            raise ValueError("TdnnfConfig.num_classes (number of pdf_ids) must be > 0")
        ctx = list(self.first_context)
        if not ctx or ctx != list(range(ctx[0], ctx[0] + len(ctx))) or ctx[0] > 0 or ctx[-1] < 0:
            raise ValueError(
                f"TdnnfConfig.first_context must be a contiguous range containing 0, got {ctx}"
            )
        if not self.time_strides or any(s < 0 for s in self.time_strides):
            raise ValueError("TdnnfConfig.time_strides must be a non-empty list of strides >= 0")
        if self.subsampling < 1:
            raise ValueError("TdnnfConfig.subsampling must be >= 1")
        r = self.subsampling
        sub = subsample_index(self.time_strides, r)
        if r > 1 and sub == len(self.time_strides):
            raise ValueError(
                f"TdnnfConfig: subsampling {r} needs the last time_strides to be 0 or multiples "
                f"of {r} (got {self.time_strides})"
            )
        if min(self.hidden, self.bottleneck, self.prefinal_dim) < 1:
            raise ValueError("TdnnfConfig: hidden, bottleneck and prefinal_dim must be >= 1")


def subsample_index(strides, r: int) -> int:
    """Index of the first layer from which every stride is 0 or a multiple of ``r`` (the layers
    from there on run at 1/r of the frame rate)."""
    i = len(strides)
    while i > 0 and strides[i - 1] % r == 0:
        i -= 1
    return i


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm without scale/offset over (N, C, T) whose statistics use only the frames
    where ``mask`` (N, T) is true (all frames when ``mask`` is None)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, eps=BN_EPSILON, affine=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None or bool(mask.all()) or not self.training:
            return super().forward(x)
        m = mask[:, None, :].to(x.dtype)
        count = m.sum().clamp_min(1.0)
        mean = (x * m).sum((0, 2)) / count
        var = (((x - mean[None, :, None]) ** 2) * m).sum((0, 2)) / count
        with torch.no_grad():
            k = self.momentum
            self.running_mean.mul_(1 - k).add_(k * mean)
            unbiased = var * count / (count - 1).clamp_min(1.0)
            self.running_var.mul_(1 - k).add_(k * unbiased)
            self.num_batches_tracked += 1
        return (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)


@torch.no_grad()
def constrain_orthonormal(weight: torch.Tensor) -> None:
    """One step of Kaldi's floating-scale semi-orthogonal constraint on ``weight`` (out, ...)
    in place (see the module docstring)."""
    m = weight.reshape(weight.shape[0], -1)
    trans = m.shape[0] > m.shape[1]
    if trans:
        m = m.T
    m64 = m.double()
    p = m64 @ m64.T
    tr_p = p.trace()
    if tr_p < 1e-15:
        return
    tr_pp = (p * p).sum()
    scale2 = tr_pp / tr_p
    speed = 0.125
    ratio = tr_pp * p.shape[0] / (tr_p * tr_p)
    if ratio > 1.02:
        speed *= 0.5
        if ratio > 1.1:
            speed *= 0.5
    alpha = speed / scale2
    p -= scale2 * torch.eye(p.shape[0], dtype=p.dtype, device=p.device)
    m64 -= 4.0 * alpha * (p @ m64)
    new = m64.T if trans else m64
    weight.copy_(new.to(weight.dtype).reshape_as(weight))


class TdnnfLayer(nn.Module):
    """A ``tdnnf-layer`` at stride ``step`` (in frames of the rate it runs at; 0: no context):
    (N, H, T) -> (N, H, T - 2 step)."""

    def __init__(self, dim: int, bottleneck: int, step: int, bypass_scale: float, dropout: float):
        super().__init__()
        k, d = (2, step) if step > 0 else (1, 1)
        self.step = step
        self.linear = nn.Conv1d(dim, bottleneck, k, dilation=d, bias=False)  # offsets -s, 0
        self.affine = nn.Conv1d(bottleneck, dim, k, dilation=d)  # offsets 0, +s
        self.norm = MaskedBatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.bypass_scale = bypass_scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        s = self.step
        y = torch.relu(self.affine(self.linear(x)))
        y = self.norm(y, mask)
        if self.dropout is not None:
            y = self.dropout(y)
        if self.bypass_scale:
            y = y + self.bypass_scale * x[:, :, s : x.shape[2] - s]
        return y


class _Prefinal(nn.Module):
    """Kaldi's prefinal-layer: affine (small -> big) -> ReLU -> batchnorm -> linear (big ->
    small, semi-orthogonal) -> batchnorm; per frame."""

    def __init__(self, small: int, big: int) -> None:
        super().__init__()
        self.affine = nn.Linear(small, big)
        self.norm1 = MaskedBatchNorm1d(big)
        self.linear = nn.Linear(big, small, bias=False)
        self.norm2 = MaskedBatchNorm1d(small)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = torch.relu(self.affine(x.transpose(1, 2))).transpose(1, 2)
        h = self.norm1(h, mask)
        return self.norm2(self.linear(h.transpose(1, 2)).transpose(1, 2), mask)


def _delta_kernel(window: int = 2) -> torch.Tensor:
    j = torch.arange(-window, window + 1, dtype=torch.float32)
    return j / (2.0 * (j[window + 1 :] ** 2).sum())


class Tdnnf(nn.Module):
    """feats (N, T, F), lengths (N,) -> chain output (N, T', C); see the module docstring."""

    def __init__(self, cfg: TdnnfConfig) -> None:
        super().__init__()
        self.cfg = cfg
        r = cfg.subsampling
        in_dim = cfg.input_dim * (3 if cfg.input_deltas else 1)
        if cfg.input_deltas:
            self.register_buffer("delta_kernel", _delta_kernel(), persistent=False)
        self.spec_augment = None
        if cfg.spec_augment:
            self.spec_augment = SpecAugmentLayer(
                cfg.spec_augment_freq_max_proportion,
                cfg.spec_augment_time_zeroed_proportion,
                cfg.spec_augment_time_mask_max_frames,
            )
        lo, hi = -cfg.first_context[0], cfg.first_context[-1]
        self.tdnn1 = nn.Conv1d(in_dim, cfg.hidden, lo + hi + 1)
        self.tdnn1_norm = MaskedBatchNorm1d(cfg.hidden)
        self.sub_at = subsample_index(cfg.time_strides, r) if r > 1 else len(cfg.time_strides)
        steps = [s if i < self.sub_at else s // r for i, s in enumerate(cfg.time_strides)]
        self.layers = nn.ModuleList(
            TdnnfLayer(cfg.hidden, cfg.bottleneck, st, cfg.bypass_scale, cfg.dropout)
            for st in steps
        )
        self.prefinal_l = nn.Linear(cfg.hidden, cfg.prefinal_dim, bias=False)
        self.prefinal_chain = _Prefinal(cfg.prefinal_dim, cfg.hidden)
        self.output = nn.Linear(cfg.prefinal_dim, cfg.num_classes)
        self.prefinal_xent = self.output_xent = None
        if cfg.xent_branch:
            self.prefinal_xent = _Prefinal(cfg.prefinal_dim, cfg.hidden)
            self.output_xent = nn.Linear(cfg.prefinal_dim, cfg.num_classes)
        full = (4 if cfg.input_deltas else 0) + sum(cfg.time_strides[: self.sub_at])
        sub = sum(cfg.time_strides[self.sub_at :])
        self._left = full + lo + sub
        self._right = full + hi + sub

    # ---- geometry ----------------------------------------------------------------------------
    @property
    def left_context(self) -> int:
        """Input frames needed before an output frame's own input frame."""
        return self._left

    @property
    def right_context(self) -> int:
        """Input frames needed after an output frame's own input frame."""
        return self._right

    def output_lengths(self, lengths: torch.Tensor, context_included: bool = False):
        """(N,) input frames -> (N,) output frames."""
        r = self.cfg.subsampling
        if context_included:
            return ((lengths - self._left - self._right - 1) // r + 1).clamp_min(0)
        return (lengths + r - 1) // r

    def pad_edges(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, T, F) -> (N, left + T + right, F): each sequence's first frame repeated before it
        and its last frame after it (past its length), so it carries its own context."""
        t = torch.arange(-self._left, feats.shape[1] + self._right, device=feats.device)
        idx = torch.minimum(t[None, :].clamp_min(0), (lengths[:, None] - 1).clamp_min(0))
        return torch.gather(feats, 1, idx[..., None].expand(-1, -1, feats.shape[2]))

    # ---- forward -----------------------------------------------------------------------------
    def forward_branches(self, feats, lengths, context_included: bool = False):
        """(chain output (N, T', C), xent output (N, T', C) or None, output lengths (N,))."""
        cfg = self.cfg
        lengths = lengths.to(feats.device)
        if not context_included:
            feats = self.pad_edges(feats, lengths)
            lengths = lengths + self._left + self._right
        if self.spec_augment is not None:
            feats = self.spec_augment(feats, lengths)
        x = feats.transpose(1, 2)  # (N, F, T)
        valid = lengths.clone()
        if cfg.input_deltas:
            n, f, t = x.shape
            k = self.delta_kernel.to(x.dtype)[None, None, :]
            d1 = nn.functional.conv1d(x.reshape(n * f, 1, t), k)
            d2 = nn.functional.conv1d(d1, k)
            x = torch.cat([x[:, :, 4 : t - 4], d1.reshape(n, f, -1)[:, :, 2 : t - 6],
                           d2.reshape(n, f, -1)], 1)  # fmt: skip
            valid = valid - 8
        x = torch.relu(self.tdnn1(x))
        valid = valid - (self.tdnn1.kernel_size[0] - 1)
        x = self.tdnn1_norm(x, _mask(valid, x.shape[2]))
        r = cfg.subsampling
        for i, layer in enumerate(self.layers):
            if i == self.sub_at and r > 1:
                x = x[:, :, ::r]
                valid = (valid + r - 1) // r
            x = layer(x, _mask(valid - 2 * layer.step, x.shape[2] - 2 * layer.step))
            valid = valid - 2 * layer.step
        if self.sub_at == len(self.layers) and r > 1:
            x = x[:, :, ::r]
            valid = (valid + r - 1) // r
        mask = _mask(valid, x.shape[2])
        h = self.prefinal_l(x.transpose(1, 2)).transpose(1, 2)
        out = self.output(self.prefinal_chain(h, mask).transpose(1, 2))
        xent = None
        if self.output_xent is not None:
            xent = self.output_xent(self.prefinal_xent(h, mask).transpose(1, 2))
        return out, xent, valid.clamp_min(0)

    def forward(self, feats, lengths, context_included: bool = False) -> torch.Tensor:
        return self.forward_branches(feats, lengths, context_included)[0]

    # ---- constraints and regularization ------------------------------------------------------
    def orthonormal_weights(self) -> list[torch.Tensor]:
        """The weights with Kaldi's ``orthonormal-constraint=-1``."""
        ws = [layer.linear.weight for layer in self.layers] + [self.prefinal_l.weight]
        ws.append(self.prefinal_chain.linear.weight)
        if self.prefinal_xent is not None:
            ws.append(self.prefinal_xent.linear.weight)
        return ws

    def constrain_orthonormal(self) -> None:
        """Apply the semi-orthogonal constraint to every constrained weight (every few steps)."""
        for w in self.orthonormal_weights():
            constrain_orthonormal(w)

    def l2_penalty(self) -> torch.Tensor:
        """sum over weight matrices of l2 * ||W||^2 (``l2`` for the body and prefinal layers,
        ``output_l2`` for output and output-xent), as Kaldi's per-component l2-regularize."""
        cfg = self.cfg
        outputs = [self.output] + ([self.output_xent] if self.output_xent is not None else [])
        out_ids = {id(m.weight) for m in outputs}
        total = self.output.weight.new_zeros(())
        for p in self.parameters():
            if p.dim() < 2:
                continue
            c = cfg.output_l2 if id(p) in out_ids else cfg.l2
            if c:
                total = total + c * (p * p).sum()
        return total


def _mask(valid: torch.Tensor, t: int) -> torch.Tensor | None:
    """(N, t) bool: position < valid[n]; None when every position is valid."""
    if t <= 0:
        return None
    if bool((valid >= t).all()):
        return None
    return torch.arange(t, device=valid.device)[None, :] < valid[:, None]
