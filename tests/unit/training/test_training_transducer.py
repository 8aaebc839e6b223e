"""``pykaldi2 train-transducer`` on synthetic features: learning, exact resume with EMA, skips,
the model dir, decode-transducer, the front end and its reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from pykaldi2.cli.main import main
from pykaldi2.features.transducer_frontend import (
    TransducerFrontendConfig,
    stack_frames,
    stack_frames_reference,
)
from pykaldi2.training.ema import Ema
from pykaldi2.training.transducer import TrainTransducerConfig, TransducerTask, ctc_loss_sum
from pykaldi2.utils.errors import DataError, Pykaldi2Error

WORDS = ["YES", "NO"]
LETTERS = sorted(set("".join(WORDS)))  # E N O S Y


def make_corpus(root, num_utts: int = 12, seed: int = 0):
    """data/ with feats.scp (ark), text, utt2spk: each letter is 3 frames of a noisy one-hot,
    words are separated by 2 silence frames, so a tiny transducer can learn the transcripts."""
    import kaldiio

    rng = np.random.default_rng(seed)
    data = root / "data"
    data.mkdir(parents=True)
    dim = len(LETTERS) + 1
    texts = []
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for i in range(num_utts):
            utt = f"spk{i % 2}-u{i:02d}"
            words = list(rng.choice(WORDS, size=rng.integers(1, 4)))
            rows = [np.eye(dim)[dim - 1]] * 2
            for word in words:
                for c in word:
                    rows += [np.eye(dim)[LETTERS.index(c)]] * 3
                rows += [np.eye(dim)[dim - 1]] * 2
            x = np.array(rows) + 0.05 * rng.normal(size=(len(rows), dim))
            w[utt] = x.astype(np.float32)
            texts.append(f"{utt} {' '.join(words)}\n")
        # an utterance with far more tokens than frames: skipped and counted
        w["spk0-zshort"] = np.zeros((2, dim), np.float32)
        texts.append("spk0-zshort YES NO YES NO YES NO\n")
    (data / "text").write_text("".join(texts))
    (data / "utt2spk").write_text("".join(f"{t.split()[0]} {t[:4]}\n" for t in texts))
    return data


def write_config(root, data, **extra):
    cfg = {
        "train_data": [str(data)],
        "valid_fraction": 0.0,
        "tokenizer": {"vocab_size": 10, "model_type": "bpe"},
        "frontend": {"cmvn": "none", "frame_stack": 1, "frame_subsample": 1},
        "model_size": "tiny",
        "model": {"enc_n_hid": 16, "pred_n_hid": 8, "joint_n_hid": 16},
        "batch_size": 4,
        "num_buckets": 2,
        "num_workers": 0,
        "ema_decay": 0.9,
        "joint_lr_factor": 2.0,
        "trainer": {
            "lr": 0.02,
            "max_epochs": 100,
            "max_steps": 6,
            "checkpoint_every": 0,
            "log_every": 1,
            "schedule": {"warmup_steps": 2, "hold_steps": 2, "decay": "exp", "decay_steps": 10},
        },
        **extra,
    }
    path = root / "conf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _weights(final):
    from pykaldi2.export.model_dir import load_model_dir

    return load_model_dir(final).load_state()


def test_train_resume_and_decode(tmp_path, one_thread):
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data)
    # 6 steps in one go ...
    assert main(["train-transducer", "--config", str(conf), str(tmp_path / "a")]) == 0
    # ... equal 3 steps, then a resumed run to 6 (EMA included)
    assert (
        main(
            [
                "train-transducer",
                "--config",
                str(conf),
                "--override",
                "trainer.max_steps=3",
                str(tmp_path / "b"),
            ]  # fmt: skip
        )
        == 0
    )
    assert (tmp_path / "b/final").is_dir()
    assert main(["train-transducer", "--config", str(conf), str(tmp_path / "b")]) == 0
    wa, wb = _weights(tmp_path / "a/final"), _weights(tmp_path / "b/final")
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    skipped = json.loads((tmp_path / "a/log/skipped.json").read_text())
    assert skipped["counts"]["too_many_tokens"] == 1
    assert skipped["utts"]["too_many_tokens"] == ["spk0-zshort"]
    md = yaml.safe_load((tmp_path / "a/final/model.yaml").read_text())
    assert md["kind"] == "transducer" and md["configs"]["training"]["ema"] is True
    assert md["configs"]["model"]["in_feats"] == len(LETTERS) + 1
    # decode-transducer writes hyp.txt and wer
    out = tmp_path / "a/decode"
    assert main(["decode-transducer", str(tmp_path / "a/final"), str(data), str(out)]) == 0
    hyp = (out / "hyp.txt").read_text().splitlines()
    assert len(hyp) == 13 and (out / "wer").read_text().startswith("%WER")


def test_average_best_is_the_mean_of_the_best_validated_epochs_and_resumes(tmp_path, one_thread):
    """average_best: 2 of 4 epochs, ranked by the EMA weights' validation loss: final/ is the
    mean of their snapshots, final_last/ the last epoch's model; 2 epochs + a resume to 4
    give the same files."""
    data = make_corpus(tmp_path)
    over = ["trainer.max_steps=0", "trainer.max_epochs=4", "valid_fraction=0.25",
            "average_best=2"]  # fmt: skip
    conf = write_config(tmp_path, data)
    args = ["train-transducer", "--config", str(conf)] + [f"--override={o}" for o in over]
    assert main([*args, str(tmp_path / "a")]) == 0
    exp = tmp_path / "a"
    rows = [json.loads(x) for x in (exp / "log/valid.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("final_loss" in r for r in rows)
    ranked = sorted(range(1, 5), key=lambda e: (rows[e - 1]["final_loss"], e))[:2]
    md = yaml.safe_load((exp / "final/model.yaml").read_text())["configs"]["training"]
    assert md["averaged_epochs"] == ranked
    snaps = [torch.load(exp / f"checkpoints/best/epoch-{e}.pt")["model"] for e in ranked]
    final, last = _weights(exp / "final"), _weights(exp / "final_last")
    for k, v in final.items():
        if v.is_floating_point():
            want = ((snaps[0][k].double() + snaps[1][k].double()) / 2).to(v.dtype)
            torch.testing.assert_close(v, want, msg=k)
    assert any(not torch.equal(final[k], last[k]) for k in final)
    # killed after 2 epochs (a checkpoint per epoch), resumed: the same list and final model
    assert main([*args, "--override=trainer.max_epochs=2", str(tmp_path / "b")]) == 0
    assert main([*args, str(tmp_path / "b")]) == 0
    assert (tmp_path / "b/checkpoints/best/best.json").read_text() == (
        exp / "checkpoints/best/best.json").read_text()  # fmt: skip
    wb = _weights(tmp_path / "b/final")
    for k in final:
        torch.testing.assert_close(final[k], wb[k], rtol=0, atol=0, msg=k)


def test_average_best_needs_validation(tmp_path):
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data, average_best=3)
    with pytest.raises(Pykaldi2Error, match="average_best ranks epochs by validation loss"):
        TrainTransducerConfig.load(conf)


def test_train_transducer_killed_at_a_random_point_resumes_exactly(tmp_path, one_thread):
    """SIGKILL of a running train-transducer at a random moment after its step-2 checkpoint,
    then the same command again: the final (EMA) weights equal an uninterrupted run's."""
    from kill_resume import check_kill_and_resume

    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data)
    cmd = ["train-transducer", "--config", str(conf)]
    for o in ["trainer.max_steps=12", "trainer.checkpoint_every=2", "trainer.keep_last=100"]:
        cmd += ["--override", o]
    check_kill_and_resume(cmd, tmp_path, after_step=2, seed=11,
                          weights=lambda exp: _weights(exp / "final"))  # fmt: skip


def test_training_learns(tmp_path, one_thread):
    """The toy task is learnt: the loss falls 100-fold, greedy decoding gets most words right
    (the 2-frame utterance with 6 words, never trained on, counts 6 of the 32 words; an untrained
    model scores 100%, one that always says YES 71%)."""
    data = make_corpus(tmp_path, num_utts=12)
    conf = write_config(
        tmp_path,
        data,
        ema_decay=0.0,
        model={"enc_n_hid": 32, "pred_n_hid": 16, "joint_n_hid": 32},
    )
    args = ["train-transducer", "--config", str(conf), str(tmp_path / "e")]
    for o in ["trainer.max_steps=240", "trainer.schedule.decay=none", "trainer.lr=0.01"]:
        args[1:1] = ["--override", o]
    assert main(args) == 0
    out = tmp_path / "e/decode"
    assert main(["decode-transducer", str(tmp_path / "e/final"), str(data), str(out)]) == 0
    wer = float((out / "wer").read_text().split()[1])
    assert wer < 40.0, (out / "hyp.txt").read_text()


def test_config_errors(tmp_path):
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data, bogus=1)
    with pytest.raises(DataError, match="bogus"):
        TrainTransducerConfig.load(conf)
    with pytest.raises(Pykaldi2Error, match="ema_decay"):
        TrainTransducerConfig(train_data=["x"], ema_decay=1.5)
    with pytest.raises(Pykaldi2Error, match="cmvn"):
        TransducerFrontendConfig(cmvn="speaker")
    conf = write_config(tmp_path, data, model={"vocab_size": 3})
    from pykaldi2.training.transducer import train_transducer

    with pytest.raises(DataError, match="model.vocab_size"):
        train_transducer(TrainTransducerConfig.load(conf), tmp_path / "x")
    # utterances without a text line: named, and refused above max_missing_text_fraction
    lines = (data / "text").read_text().splitlines()
    (data / "text").write_text("".join(ln + "\n" for ln in lines[2:]))
    gone = ", ".join(ln.split()[0] for ln in lines[:2])
    with pytest.raises(DataError, match=f"2 of 13 utterances .* have no transcript, .*: {gone}"):
        train_transducer(TrainTransducerConfig.load(write_config(tmp_path, data)), tmp_path / "y")


@pytest.mark.parametrize("stack,sub", [(1, 1), (3, 3), (2, 3), (4, 2)])
def test_stack_frames_matches_reference(stack, sub):
    x = np.random.default_rng(0).normal(size=(11, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        stack_frames(x, stack, sub), stack_frames_reference(x, stack, sub)
    )
    assert len(stack_frames(x, stack, sub)) == TransducerFrontendConfig(
        frame_stack=stack, frame_subsample=sub
    ).num_frames(11)


def test_ema():
    m = torch.nn.Linear(2, 1)
    ema = Ema(m, 0.5)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(2.0)
    ema.update(m, step=100)  # past the warm-up: decay 0.5
    torch.testing.assert_close(ema.model_state(m)["weight"], w0 + 1.0)


def test_ema_warmup_forgets_the_initialization():
    # 1,800 steps at decay 0.999 kept 0.999 ** 1800 = 17% of the random initialization in the
    # final weights; with the warm-up the average ends close to the trained weights.
    m = torch.nn.Linear(2, 1)
    ema = Ema(m, 0.999)
    with torch.no_grad():
        m.weight.add_(10.0)
    for step in range(1, 1801):
        ema.update(m, step)
    assert ema.decay_at(1) < 0.2 and ema.decay_at(100_000) == 0.999
    torch.testing.assert_close(ema.model_state(m)["weight"], m.weight.detach(), atol=1e-2, rtol=0)


def test_ctc_loss_sum_is_the_sum_of_unpadded_utterances():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(3, 7, 5, generator=g).log_softmax(-1)
    lengths, tl = torch.tensor([7, 5, 2]), torch.tensor([3, 2, 4])  # the last one is impossible
    targets = torch.tensor([[1, 2, 2, -1], [4, 3, -1, -1], [1, 2, 3, 4]])
    want = sum(
        torch.nn.functional.ctc_loss(
            lp[i : i + 1, : lengths[i]].transpose(0, 1),
            targets[i : i + 1, : tl[i]],
            lengths[i : i + 1],
            tl[i : i + 1],
            reduction="sum",
        )  # fmt: skip
        for i in range(2)
    )
    torch.testing.assert_close(ctc_loss_sum(lp, targets, lengths, tl, 0), want)


def test_task_adds_the_weighted_ctc_loss_in_training_only():
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig

    torch.manual_seed(0)
    m = Transducer(TransducerConfig.preset("tiny", ctc_head=True))
    batch = {
        "feats": torch.randn(2, 12, 8),
        "lengths": torch.tensor([12, 9]),
        "targets": torch.tensor([[1, 2, 3], [4, 5, -100]]),
    }
    out = TransducerTask("cpu", ctc_weight=0.3).compute_loss(m.train(), batch)
    assert out.stats["ctc"] > 0
    torch.testing.assert_close(out.loss.item(), out.stats["rnnt"] + 0.3 * out.stats["ctc"])
    out.loss.backward()
    assert m.ctc_out.weight.grad.abs().sum() > 0  # the CTC head is trained
    ev = TransducerTask("cpu", ctc_weight=0.3).compute_loss(m.eval(), batch)
    assert "ctc" not in ev.stats and ev.loss.item() == ev.stats["rnnt"]


def test_train_with_ctc_weight_saves_a_decodable_model(tmp_path, one_thread):
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data, ctc_weight=0.3)
    assert main(["train-transducer", "--config", str(conf), str(tmp_path / "c")]) == 0
    md = yaml.safe_load((tmp_path / "c/final/model.yaml").read_text())
    assert md["configs"]["model"]["ctc_head"] is True
    assert "ctc_out.weight" in _weights(tmp_path / "c/final")
    out = tmp_path / "c/decode"
    assert main(["decode-transducer", str(tmp_path / "c/final"), str(data), str(out)]) == 0
    assert (out / "wer").read_text().startswith("%WER")


def test_pruned_loss_weights_follow_icefall_warmup():
    from pykaldi2.training.transducer import PrunedLossConfig

    p = PrunedLossConfig(simple_loss_scale=0.5, warm_step=100)
    assert p.scales(0) == (1.0, 0.1)
    s, q = p.scales(50)
    assert s == pytest.approx(0.75) and q == pytest.approx(0.55)
    assert p.scales(100) == (0.5, 1.0) and p.scales(10**6) == (0.5, 1.0)
    with pytest.raises(Pykaldi2Error, match="prune_range"):
        PrunedLossConfig(prune_range=1)
    with pytest.raises(Pykaldi2Error, match="loss must be one of"):
        TrainTransducerConfig(train_data=["x"], loss="pruned_stateless")


def test_task_with_pruned_loss():
    """Training: s_n * simple + p_n * pruned at the trainer's step, gradients reach the simple
    projections and the joiner; evaluation: the pruned loss alone."""
    from pykaldi2.losses.rnnt_pruned import pruned_rnnt_loss
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.transducer import PrunedLossConfig

    torch.manual_seed(0)
    m = Transducer(TransducerConfig.preset("tiny", simple_proj=True, ctc_head=True))
    batch = {
        "feats": torch.randn(2, 12, 8),
        "lengths": torch.tensor([12, 9]),
        "targets": torch.tensor([[1, 2, 3], [4, 5, -100]]),
    }
    p = PrunedLossConfig(prune_range=3, warm_step=10, lm_scale=0.25)
    task = TransducerTask("cpu", ctc_weight=0.3, pruned=p)
    task.current_step = lambda: 5
    out = task.compute_loss(m.train(), batch)
    s_scale, p_scale = p.scales(5)
    want = s_scale * out.stats["simple"] + p_scale * out.stats["pruned"]
    assert out.stats["rnnt"] == pytest.approx(want)
    assert out.loss.item() == pytest.approx(want + 0.3 * out.stats["ctc"])
    out.loss.backward()
    for layer in (m.simple_am_proj, m.simple_lm_proj, m.joiner.out):
        assert layer.weight.grad.abs().sum() > 0
    ev = task.compute_loss(m.eval(), batch)
    tl = torch.tensor([3, 2])
    _, pruned = pruned_rnnt_loss(m, batch["feats"], batch["lengths"], batch["targets"].clamp(min=0),
                                 tl, 3, "sum", 0.25)  # fmt: skip
    assert ev.loss.item() == pytest.approx(pruned.item()) == pytest.approx(ev.stats["rnnt"])


@pytest.mark.parametrize("loss", ["full", "pruned"])
def test_task_joiner_node_budget(loss, monkeypatch):
    """joiner_max_nodes (the stream branch's joiner groups) with either loss: a budget smaller
    than the batch's lattice gives the loss and gradients of one that holds it. The full loss
    then runs its joiner in recomputed groups; the pruned loss's joiner runs on the band
    (B x T' x prune_range nodes) and never on groups."""
    from pykaldi2.losses import rnnt_chunked
    from pykaldi2.nnet.transducer import Transducer, TransducerConfig
    from pykaldi2.training.transducer import PrunedLossConfig

    calls = []
    real = rnnt_chunked.group_loss_recomputed
    monkeypatch.setattr(
        rnnt_chunked, "group_loss_recomputed", lambda *a: calls.append(1) or real(*a)
    )
    torch.manual_seed(0)
    cfg = TransducerConfig.preset("tiny", simple_proj=True, ctc_head=True, joint_dropout=0.0)
    m = Transducer(cfg).train()
    batch = {
        "feats": torch.randn(3, 16, 8),
        "lengths": torch.tensor([16, 12, 9]),
        "targets": torch.tensor([[1, 2, 3, 4], [4, 5, -100, -100], [2, -100, -100, -100]]),
    }
    pruned = PrunedLossConfig(prune_range=3, warm_step=0) if loss == "pruned" else None

    def run(budget):
        m.zero_grad()
        out = TransducerTask("cpu", ctc_weight=0.3, pruned=pruned, joiner_max_nodes=budget)
        res = out.compute_loss(m, batch)
        res.loss.backward()
        return res.loss.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]

    whole_loss, whole_grads = run(10**6)
    assert not calls
    split_loss, split_grads = run(20)  # the biggest utterance alone is 8 x 5 = 40 nodes
    assert len(calls) == (3 if loss == "full" else 0)
    torch.testing.assert_close(split_loss, whole_loss)
    assert len(split_grads) == len(whole_grads)
    for a, b in zip(split_grads, whole_grads):
        torch.testing.assert_close(a, b)


def test_train_with_pruned_loss_resumes_exactly_and_learns(tmp_path, one_thread):
    """loss: pruned: 6 steps in one go equal 3 + 3 resumed (the warm-up weights follow the
    restored step); a longer run learns the toy task as the full loss does."""
    data = make_corpus(tmp_path)
    conf = write_config(tmp_path, data, loss="pruned",
                        pruned={"prune_range": 3, "warm_step": 4})  # fmt: skip
    assert main(["train-transducer", "--config", str(conf), str(tmp_path / "a")]) == 0
    half = ["--override", "trainer.max_steps=3"]
    assert main(["train-transducer", "--config", str(conf), *half, str(tmp_path / "b")]) == 0
    assert main(["train-transducer", "--config", str(conf), str(tmp_path / "b")]) == 0
    wa, wb = _weights(tmp_path / "a/final"), _weights(tmp_path / "b/final")
    assert "simple_am_proj.weight" in wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    conf = write_config(
        tmp_path, data, loss="pruned", pruned={"prune_range": 3, "warm_step": 60},
        ema_decay=0.0, model={"enc_n_hid": 32, "pred_n_hid": 16, "joint_n_hid": 32},
    )  # fmt: skip
    args = ["train-transducer", "--config", str(conf), str(tmp_path / "e")]
    for o in ["trainer.max_steps=240", "trainer.schedule.decay=none", "trainer.lr=0.01"]:
        args[1:1] = ["--override", o]
    assert main(args) == 0
    out = tmp_path / "e/decode"
    assert main(["decode-transducer", str(tmp_path / "e/final"), str(data), str(out)]) == 0
    wer = float((out / "wer").read_text().split()[1])
    assert wer < 40.0, (out / "hyp.txt").read_text()


def test_train_with_global_normalization_from_a_stats_file(tmp_path, one_thread):
    """frontend cmvn: global seeded by compute-mel-stats (Myrtle's dumped mel stats): the model
    dir's front end holds the file's mean/var; without the file, train-transducer computes the
    same statistics over the training utterances."""
    from pykaldi2.features.ewma_norm import read_global_stats, stats_mean_var

    data = make_corpus(tmp_path)
    stats = tmp_path / "mel_stats.mat"
    assert main(["compute-mel-stats", str(data), str(stats)]) == 0
    mean, var = stats_mean_var(read_global_stats(stats))
    for name, ewma in (("file", {"stats_file": str(stats)}), ("computed", {})):
        fe = {"cmvn": "global", "frame_stack": 1, "frame_subsample": 1, "ewma": ewma}
        conf = write_config(tmp_path, data, frontend=fe)
        assert main(["train-transducer", "--config", str(conf), str(tmp_path / name)]) == 0
        md = yaml.safe_load((tmp_path / name / "final/model.yaml").read_text())
        got = md["configs"]["frontend"]["ewma"]
        np.testing.assert_allclose(got["mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(got["var"], var, rtol=1e-6)


def test_select_utts_skips_long_utterances(tmp_path):
    from pykaldi2.training.transducer_egs import select_utts

    class Feats(dict):
        def shape(self, utt):
            return self[utt], 3

    feats = Feats(a=30, b=300, c=1200, d=2)
    tokens = {"a": [1, 2], "b": [1] * 20, "c": [3], "d": [1, 2, 3]}
    fe = TransducerFrontendConfig(cmvn="none", frame_stack=1, frame_subsample=3)
    keep, skipped = select_utts(feats, tokens, fe, 2, max_frames_per_utt=1000)
    assert keep == ["a", "b"] and skipped["too_long"] == ["c"]
    assert skipped["too_many_tokens"] == ["d"]
    assert select_utts(feats, tokens, fe, 2)[0] == ["a", "b", "c"]
