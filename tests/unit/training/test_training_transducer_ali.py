"""train-transducer with HMM-GMM alignments (``ali_dir``, ``ali_weight``): the labels at the
encoder frames and their slow reference, the frame cross-entropy against a per-utterance
brute force, the task's weighting, and a training run that skips unaligned utterances and
saves a decodable model with the alignment head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from test_training_ce import _ali_model
from test_training_transducer import make_corpus, write_config

from pykaldi2.cli.main import main
from pykaldi2.training.transducer import TrainTransducerConfig, TransducerTask, frame_ce_sum
from pykaldi2.training.transducer_egs import encoder_labels
from pykaldi2.utils.errors import Pykaldi2Error


def encoder_labels_reference(labels, frames: int, k: int) -> list[int]:
    """Loop form: encoder frame j's label is the one at time (j + 1/2) encoder frames, on a
    time axis where the whole utterance (ceil(frames / k) encoder frames) spans the labels."""
    e = -(-frames // k)
    out = []
    for j in range(e):
        t = int((j + 0.5) * len(labels) / e)
        out.append(int(labels[min(t, len(labels) - 1)]))
    return out


@pytest.mark.parametrize(
    ("a", "frames", "k"), [(12, 4, 2), (12, 12, 1), (13, 5, 2), (30, 9, 2), (7, 7, 3), (40, 12, 2)]
)
def test_encoder_labels_match_the_reference(a, frames, k):
    labels = np.random.default_rng(a * frames).integers(0, 50, a)
    got = encoder_labels(labels, frames, k)
    assert got.dtype == np.int64 and len(got) == -(-frames // k)
    assert got.tolist() == encoder_labels_reference(labels, frames, k)


def test_encoder_labels_take_the_centre_of_each_encoder_frame():
    # 24 feature frames, front end subsample 3 -> 8 frames, k = 2 -> 4 encoder frames of 6
    # feature frames each: frame j's label is feature frame 6j + 3's
    labels = np.arange(24)
    assert encoder_labels(labels, 8, 2).tolist() == [3, 9, 15, 21]
    # a speed-perturbed copy 1.5x as long (12 frames -> 6 encoder frames): stretched
    assert encoder_labels(labels, 12, 2).tolist() == [2, 6, 10, 14, 18, 22]


def test_frame_ce_sum_is_the_sum_over_labelled_frames():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(2, 6, 4, generator=g).log_softmax(-1)
    labels = torch.tensor([[0, 1, 2, 3, 1], [2, 2, -100, -100, -100]])
    stats: dict = {}
    got = frame_ce_sum(lp, labels, stats)
    want = -sum(float(lp[0, t, labels[0, t]]) for t in range(5)) - float(lp[1, 0, 2] + lp[1, 1, 2])
    assert got.item() == pytest.approx(want, rel=1e-6)
    assert stats["ali_frames"] == 7 and stats["ali_ce"] == pytest.approx(want, rel=1e-6)
    hits = sum(int(lp[0, t].argmax() == labels[0, t]) for t in range(5))
    hits += sum(int(lp[1, t].argmax() == 2) for t in range(2))
    assert stats["ali_correct"] == hits


def test_task_adds_the_weighted_frame_ce_in_training_only():
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig

    torch.manual_seed(0)
    m = Transducer(TransducerConfig.preset("tiny", ali_classes=5))
    k = m.cfg.enc_stack_time_factor
    batch = {
        "feats": torch.randn(2, 12, 8),
        "lengths": torch.tensor([12, 9]),
        "targets": torch.tensor([[1, 2, 3], [4, 5, -100]]),
        "frame_labels": torch.tensor([[0, 1, 2, 3, 4, 0][: -(-12 // k)], [1, 1, 1, 1, 1, -100]])[
            :, : -(-12 // k)
        ],
    }
    out = TransducerTask("cpu", ali_weight=0.2).compute_loss(m.train(), batch)
    assert out.stats["ali_ce"] > 0 and out.stats["ali_frames"] > 0
    torch.testing.assert_close(out.loss.item(), out.stats["rnnt"] + 0.2 * out.stats["ali_ce"])
    out.loss.backward()
    assert m.ali_out.weight.grad.abs().sum() > 0
    ev = TransducerTask("cpu", ali_weight=0.2).compute_loss(m.eval(), batch)
    assert "ali_ce" not in ev.stats and ev.loss.item() == ev.stats["rnnt"]
    # no labels in the batch (validation items): the RNN-T loss alone
    plain = TransducerTask("cpu", ali_weight=0.2).compute_loss(
        m.train(), {**batch, "frame_labels": None}
    )
    assert "ali_ce" not in plain.stats


def write_alignments(root, data, drop: tuple[str, ...] = ()):
    """ali/ (final.mdl + ali.ark) for ``data``'s utterances of at least 10 frames: a phone
    every 5 frames (the last 5-9), 2 and 3 alternating (3-state HMMs), ``drop`` left out."""
    import kaldiio

    from pykaldi2.hmm.ali import phones_to_ali, write_ali

    model = _ali_model()
    alis = {}
    for utt, x in kaldiio.load_scp(str(data / "feats.scp")).items():
        t = len(x)
        if t < 10 or utt in drop:
            continue
        durs = [5] * (t // 5 - 1) + [5 + t % 5]
        alis[utt] = phones_to_ali(model, [2 + i % 2 for i in range(len(durs))], durs)
        assert len(alis[utt]) == t
    ali = root / "ali"
    ali.mkdir()
    model.save(ali / "final.mdl")
    write_ali(ali / "ali.ark", alis)
    return ali, model


def test_train_with_alignments_skips_unaligned_and_saves_a_decodable_model(tmp_path, one_thread):
    data = make_corpus(tmp_path)
    ali, model = write_alignments(tmp_path, data, drop=("spk1-u03",))
    conf = write_config(tmp_path, data, ali_dir=[str(ali)], ali_weight=0.3, ali_targets="phone")
    exp = tmp_path / "a"
    assert main(["train-transducer", "--config", str(conf), str(exp)]) == 0
    skipped = json.loads((exp / "log/skipped.json").read_text())
    assert skipped["utts"]["no_alignment"] == ["spk1-u03"]
    md = yaml.safe_load((exp / "final/model.yaml").read_text())
    assert md["configs"]["model"]["ali_classes"] == int(model.tid2phone.max()) + 1 == 4
    from pykaldi2.export.model_dir import load_model_dir

    assert "ali_out.weight" in load_model_dir(exp / "final").load_state()
    trained = md["configs"]["training"]
    assert trained["final_ali_ce"] > 0 and trained["final_ali_frames"] > 0
    out = exp / "decode"
    assert main(["decode-transducer", str(exp / "final"), str(data), str(out)]) == 0
    assert (out / "wer").read_text().startswith("%WER")


def test_pdf_targets_use_the_models_pdfs(tmp_path, one_thread):
    from pykaldi2.training.data import DataDirFeatures
    from pykaldi2.training.transducer_egs import aligned_utts

    data = make_corpus(tmp_path)
    ali, model = write_alignments(tmp_path, data)
    cfg = TrainTransducerConfig.from_dict(
        {"train_data": [str(data)], "ali_dir": [str(ali)], "ali_weight": 1.0, "ali_targets": "pdf"}
    )
    feats = DataDirFeatures(cfg.train_data, cfg.frontend.pipeline())
    utts = sorted(u for u in feats if u != "spk0-zshort")
    kept, missing, store, table, classes = aligned_utts(cfg, feats, utts, tmp_path / "egs")
    assert kept == utts and missing == [] and classes == int(model.tm.num_pdfs)
    u = utts[0]
    assert table[np.asarray(store[u])].tolist() == model.tid2pdf[np.asarray(store[u])].tolist()


def test_alignment_config_errors(tmp_path):
    data = make_corpus(tmp_path)
    with pytest.raises(Pykaldi2Error, match="ali_dir and ali_weight"):
        TrainTransducerConfig.from_dict({"train_data": [str(data)], "ali_weight": 0.5})
    with pytest.raises(Pykaldi2Error, match="ali_dir and ali_weight"):
        TrainTransducerConfig.from_dict({"train_data": [str(data)], "ali_dir": ["x"]})
    with pytest.raises(Pykaldi2Error, match="ali_targets"):
        TrainTransducerConfig.from_dict(
            {"train_data": [str(data)], "ali_dir": ["x"], "ali_weight": 1, "ali_targets": "word"}
        )


def test_alignments_of_another_data_dir_are_an_error(tmp_path, one_thread):
    from pykaldi2.utils.errors import DataError

    data = make_corpus(tmp_path)
    other = make_corpus(tmp_path / "other", seed=3)
    # the other corpus's utterances have other lengths: most are more than a frame off
    ali, _ = write_alignments(tmp_path / "other", other)
    conf = write_config(tmp_path, data, ali_dir=[str(ali)], ali_weight=0.3)
    with pytest.raises(DataError, match="usable targets"):
        from pykaldi2.training.transducer import train_transducer

        train_transducer(TrainTransducerConfig.load(conf), tmp_path / "x")
