"""ONNX export of a transducer model dir, and a greedy decoder on onnxruntime.

``export_onnx(model_dir, out_dir)`` writes::

    out_dir/encoder.onnx    feats (B, T, F), pre_h, pre_c (Lpre, B, H), post_h, post_c (Lpost, B, H)
                            -> enc_p (B, ceil(T / k), J), and the four new states
    out_dir/predictor.onnx  token (B, 1) int64, h, c (Lp, B, Hp) -> pred_p (B, J), h, c
    out_dir/joiner.onnx     enc_p (N, J), pred_p (N, J) -> logits (N, V)
    out_dir/tokenizer.model, out_dir/onnx.yaml (sizes, blank, front end, raw feature config)

``enc_p``/``pred_p`` are already projected by the joiner's input layers (J = joint_n_hid), so the
search loop only calls the small ``joiner.onnx``. The encoder pads its time-reduction group with
zeros at the end of every call: streaming callers give chunks of a multiple of
``enc_stack_time_factor`` frames (except the last), which is then exactly PyTorch's streaming
encoder. Exported with the TorchScript-based exporter (``dynamo=False``: the dynamo exporter
needs onnxscript), checked against PyTorch on a random input before the dir is kept.

Needs ``pip install onnx onnxruntime`` (the ``onnx`` extra of pykaldi2).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pykaldi2.utils.errors import DataError, Pykaldi2Error
from pykaldi2.utils.log import get_logger

log = get_logger(__name__)

ONNX_YAML = "onnx.yaml"
ENCODER_IO = (["feats", "pre_h", "pre_c", "post_h", "post_c"],
              ["enc_p", "pre_h_out", "pre_c_out", "post_h_out", "post_c_out"])  # fmt: skip
PREDICTOR_IO = (["token", "h", "c"], ["pred_p", "h_out", "c_out"])
JOINER_IO = (["enc_p", "pred_p"], ["logits"])


class OnnxEncoder(nn.Module):
    """Encoder + the joiner's encoder projection, states as explicit inputs and outputs."""

    def __init__(self, model) -> None:
        super().__init__()
        if model.encoder.post_rnn is None:
            raise Pykaldi2Error("ONNX export needs enc_post_rnn_layers >= 1")
        self.enc, self.joiner = model.encoder, model.joiner
        self.k = model.cfg.enc_stack_time_factor

    def forward(self, feats, pre_h, pre_c, post_h, post_c):
        enc, k = self.enc, self.k
        x, (pre_h, pre_c) = enc.pre_rnn(feats, (pre_h, pre_c))
        x = enc.pre_norm(x)
        B, T, H = x.shape
        x = torch.cat([x, x.new_zeros(B, k - 1, H)], dim=1)  # zero-pad the last group
        n = (T + k - 1) // k
        x = x[:, : n * k].reshape(B, n, k * H)
        x, (post_h, post_c) = enc.post_rnn(x, (post_h, post_c))
        return self.joiner.project_enc(enc.post_norm(x)), pre_h, pre_c, post_h, post_c


class OnnxPredictor(nn.Module):
    """One predictor step + the joiner's predictor projection."""

    def __init__(self, model) -> None:
        super().__init__()
        self.pred, self.joiner = model.predictor, model.joiner

    def forward(self, token, h, c):
        out, (h, c) = self.pred.rnn(self.pred.embed(token), (h, c))
        return self.joiner.project_pred(out[:, 0]), h, c


class OnnxJoiner(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.joiner = model.joiner

    def forward(self, enc_p, pred_p):
        return self.joiner.joint(enc_p, pred_p)


def _export(module: nn.Module, args: tuple, path: Path, io, dynamic: Mapping, opset: int) -> None:
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=io[0],
        output_names=io[1],
        dynamic_axes=dict(dynamic),
        opset_version=opset,
        dynamo=False,
    )


def export_onnx(model_dir: str | os.PathLike, out_dir: str | os.PathLike, opset: int = 17) -> Path:
    """Export a transducer model dir to ``out_dir`` (atomically); returns ``out_dir``."""
    import shutil
    import warnings

    import yaml

    from pykaldi2.decoding.streaming import load_transducer
    from pykaldi2.utils.checksums import write_checksums
    from pykaldi2.utils.io import atomic_dir

    _require_onnx()
    bundle = load_transducer(model_dir)
    model, cfg = bundle.model, bundle.model.cfg
    if cfg.enc_bidirectional:
        from pykaldi2.utils.errors import DataError

        raise DataError(
            "export-onnx writes a streaming encoder with LSTM states; this model's encoder is "
            "bidirectional (enc_bidirectional)",
            file=str(model_dir),
            fix="export a uni-directional model, or decode this one with decode-transducer",
        )
    B, T = 1, 4 * cfg.enc_stack_time_factor
    enc_states = _zeros_states(cfg, B)
    with atomic_dir(out_dir) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's LSTM batch_first / deprecation notes
        feats = torch.randn(B, T, cfg.in_feats)
        batch_t = {0: "B", 1: "T"}
        state = {1: "B"}
        _export(
            OnnxEncoder(model).eval(),
            (feats, *enc_states),
            tmp / "encoder.onnx",
            ENCODER_IO,
            {"feats": batch_t, "enc_p": {0: "B", 1: "T_enc"}}
            | {n: state for n in ENCODER_IO[0][1:] + ENCODER_IO[1][1:]},
            opset,
        )
        h = torch.zeros(cfg.pred_rnn_layers, B, cfg.pred_n_hid)
        _export(
            OnnxPredictor(model).eval(),
            (torch.zeros(B, 1, dtype=torch.long), h, h.clone()),
            tmp / "predictor.onnx",
            PREDICTOR_IO,
            {"token": {0: "B"}, "pred_p": {0: "B"}}
            | {n: state for n in ("h", "c", "h_out", "c_out")},
            opset,
        )
        j = torch.randn(B, cfg.joint_n_hid)
        _export(
            OnnxJoiner(model).eval(),
            (j, j.clone()),
            tmp / "joiner.onnx",
            JOINER_IO,
            {"enc_p": {0: "N"}, "pred_p": {0: "N"}, "logits": {0: "N"}},
            opset,
        )
        shutil.copyfile(bundle.tokenizer.model_file, tmp / "tokenizer.model")
        meta = {
            "model": cfg.to_dict(),
            "frontend": bundle.frontend.to_dict(),
            "features": bundle.features,
            "max_symbols_per_frame": bundle.max_symbols_per_frame,
            "opset": opset,
        }
        (tmp / ONNX_YAML).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        write_checksums(tmp)
        _check_export(OnnxTransducer(tmp), model)
    log.info("exported %s to %s", model_dir, out_dir)
    return Path(out_dir)


def _zeros_states(cfg, batch: int) -> tuple[torch.Tensor, ...]:
    pre = torch.zeros(cfg.enc_pre_rnn_layers, batch, cfg.enc_n_hid)
    post = torch.zeros(cfg.enc_post_rnn_layers, batch, cfg.enc_n_hid)
    return pre, pre.clone(), post, post.clone()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise Pykaldi2Error(
            f"ONNX export needs onnx and onnxruntime ({e}). Fix: pip install 'pykaldi2[onnx]'"
        ) from None


def _check_export(ort_model: OnnxTransducer, model) -> None:
    """The exported encoder/predictor/joiner against PyTorch on a random 2-chunk input."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 7 * cfg.enc_stack_time_factor + 1, cfg.in_feats, generator=g)
    with torch.no_grad():
        enc, _, _ = model.encoder(feats, torch.tensor([feats.shape[1]]))
        ref = model.joiner.project_enc(enc)[0].numpy()
    got = ort_model.encode(feats[0].numpy())
    if got.shape != ref.shape or not np.allclose(got, ref, atol=1e-4, rtol=1e-3):
        raise Pykaldi2Error(
            f"ONNX encoder output differs from PyTorch (max abs diff "
            f"{np.abs(got - ref).max() if got.shape == ref.shape else 'shape'}); please report"
        )


class OnnxTransducer:
    """Greedy transducer decoding with onnxruntime from an :func:`export_onnx` dir.

    >>> m = OnnxTransducer("exp/rnnt/onnx")
    >>> ids = m.greedy(m.encode(feats))          # feats (T, F') after the front end
    >>> m.tokenizer.decode(ids)
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1) -> None:
        import onnxruntime as ort
        import yaml

        from pykaldi2.lang.tokenizer import Tokenizer
        from pykaldi2.nnet.transducer import TransducerConfig
        from pykaldi2.utils.checksums import verify_checksums

        _require_onnx()
        self.path = Path(path)
        meta_file = self.path / ONNX_YAML
        if not meta_file.is_file():
            raise DataError(
                f"not an ONNX transducer dir (no {ONNX_YAML})",
                file=str(self.path),
                fix="write it with `pykaldi2 export-onnx MODEL_DIR OUT_DIR`",
            )
        fix = "copy the whole dir again, or re-run `pykaldi2 export-onnx`"
        verify_checksums(self.path, fix=fix)  # dirs written before checksums: unchecked
        self.meta = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
        m = self.meta["model"]
        self.blank = int(m["blank"])
        self.max_symbols = int(self.meta.get("max_symbols_per_frame", 3))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1

        def session(name):
            return ort.InferenceSession(
                str(self.path / name), opts, providers=["CPUExecutionProvider"]
            )

        self.encoder = session("encoder.onnx")
        self.predictor = session("predictor.onnx")
        self.joiner = session("joiner.onnx")
        self.tokenizer = Tokenizer(self.path / "tokenizer.model")
        self._m = m
        self.config = TransducerConfig.from_dict(m)

    def encoder_state(self) -> list[np.ndarray]:
        """The zero (start) state: pre_h, pre_c, post_h, post_c, each (L, 1, H) float32."""
        return [s.numpy() for s in _zeros_states(self.config, 1)]

    def encode(self, feats: np.ndarray, state: list[np.ndarray] | None = None, return_state=False):
        """(T, F') features -> (ceil(T / k), J) projected encoder frames (a whole utterance,
        or a chunk of a multiple of k frames with ``state`` carried)."""
        state = state or self.encoder_state()
        outs = self.encoder.run(
            None, dict(zip(ENCODER_IO[0], [feats[None].astype(np.float32), *state]))
        )
        return (outs[0][0], outs[1:]) if return_state else outs[0][0]

    def _pred(self, token: int, h: np.ndarray, c: np.ndarray):
        return self.predictor.run(None, {"token": np.array([[token]], np.int64), "h": h, "c": c})

    def greedy(self, enc_p: np.ndarray) -> list[int]:
        """Greedy search over (T', J) projected encoder frames -> symbol ids (no blanks)."""
        L, H = int(self._m["pred_rnn_layers"]), int(self._m["pred_n_hid"])
        h = c = np.zeros((L, 1, H), np.float32)
        pred_p, h, c = self._pred(self.blank, h, c)
        hyp: list[int] = []
        for t in range(enc_p.shape[0]):
            for _ in range(self.max_symbols):
                (logits,) = self.joiner.run(None, {"enc_p": enc_p[t : t + 1], "pred_p": pred_p})
                k = int(logits[0].argmax())
                if k == self.blank:
                    break
                hyp.append(k)
                pred_p, h, c = self._pred(k, h, c)
        return hyp
