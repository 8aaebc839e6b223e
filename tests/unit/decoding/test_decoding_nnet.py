"""``train-ce`` then ``decode-nnet`` on the tiny monophone system: the final dir decodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from pykaldi2.cli.main import main

SENTENCES = [["A"], ["B"], ["C"], ["A", "B"], ["B", "C"], ["C", "A"], ["A", "C", "B"]]


def _write_set(tiny, root, name, sentences, rng):
    """A data dir whose features are noisy one-hots of the pdfs ``tiny.loglik_for`` favours,
    plus their alignments (the same states, ``frames`` per state, through the HMMs)."""
    import kaldiio

    from pykaldi2.hmm.ali import phones_to_ali
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg

    model = GmmModel(tm=tiny.tm, tree=tiny.ctx, am=khg.AmDiagGmm())
    data = root / name
    data.mkdir()
    alis, text = {}, []
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for i, words in enumerate(sentences):
            utt = f"s{i:02d}"
            frames = int(rng.integers(2, 4))
            pdfs = tiny.loglik_for(words, frames=frames).argmax(1)
            phones = ["sil", *[p for word in words for p in tiny.lexicon[word]], "sil"]
            ids = [tiny.phones[p] for p in phones]
            alis[utt] = phones_to_ali(model, ids, [3 * frames] * len(ids))
            assert np.array_equal(model.tid2pdf[alis[utt]], pdfs)
            x = np.eye(tiny.tm.num_pdfs)[pdfs] + 0.1 * rng.normal(
                size=(len(pdfs), tiny.tm.num_pdfs)
            )
            w[utt] = x.astype(np.float32)
            text.append(" ".join([utt, *words]) + "\n")
    (data / "text").write_text("".join(text))
    (data / "utt2spk").write_text("".join(f"s{i:02d} s{i:02d}\n" for i in range(len(text))))
    return data, alis


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """A BLSTM trained with ``pykaldi2 train-ce`` on 4 copies of SENTENCES, and a graph dir."""
    from pykaldi2.hmm.ali import write_ali
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("nnet")
    data, alis = _write_set(tiny, root, "train", SENTENCES * 4, rng)
    test, _ = _write_set(tiny, root, "test", SENTENCES, rng)
    ali = root / "ali"
    ali.mkdir()
    GmmModel(tm=tiny.tm, tree=tiny.ctx, am=khg.AmDiagGmm()).save(ali / "final.mdl")
    write_ali(ali / "ali.ark", alis)
    graph = root / "graph"
    graph.mkdir()
    tiny.hclg.fst.write(str(graph / "HCLG.fst"))
    (graph / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in tiny.words.items()))
    conf = {
        "train_data": str(data),
        "ali_dir": str(ali),
        "valid_fraction": 0.0,
        "features": {"cmvn": "none"},
        "model": {"num_layers": 1, "hidden": 24, "dropout": 0.0},
        "chunk_size": 12,
        "left_context": 2,
        "right_context": 2,
        "batch_size": 8,
        "num_workers": 0,
        "trainer": {"lr": 0.03, "max_epochs": 25, "log_every": 1},
    }
    (root / "ce.yaml").write_text(yaml.safe_dump(conf))
    exp = root / "exp"
    assert main(["train-ce", "--config", str(root / "ce.yaml"), str(exp)]) == 0
    return exp / "final", graph, test


def test_decode_nnet_command(trained, tmp_path, capsys):
    model_dir, graph, test = trained
    out = tmp_path / "decode"
    argv = ["decode-nnet", str(model_dir), str(graph), str(test), str(out), "--nj", "2"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("%WER 0.00 [ 0 / 12, 0 ins, 0 del, 0 sub ]")
    assert (out / "hyp.txt").read_text() == (test / "text").read_text()
    assert (out / "lat.1.gz").is_file() and (out / "lat.2.gz").is_file()

    # Chunk inference (the training chunks) decodes the same; a graph for another model is
    # refused.
    argv = ["decode-nnet", str(model_dir), str(graph), str(test), str(tmp_path / "chunk")]
    assert main([*argv, "--mode", "chunk", "--no-score"]) == 0
    assert (tmp_path / "chunk" / "hyp.txt").read_text() == (test / "text").read_text()
    (graph / "num_pdfs").write_text("999\n")
    try:
        assert main(argv) == 1
        assert "was built for a model with 999 pdfs, " in capsys.readouterr().err
    finally:
        (graph / "num_pdfs").unlink()


def test_decode_nnet_and_export_refuse_a_graph_of_another_model(trained, tiny_graphs, tmp_path,
                                                                capsys):  # fmt: skip
    """graph_b has the model's pdf count and in-range transition-ids, but was built for a
    model with another topology: only its model_id tells (#18 item 2)."""
    from pykaldi2.api import save_hybrid_model
    from pykaldi2.utils.errors import DataError

    model_dir, _, test = trained
    g = tiny_graphs
    argv = ["decode-nnet", str(model_dir), str(g.graph_b), str(test), str(tmp_path / "d")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "was built for another model (model_id " in err
    assert f"than {model_dir / 'final.mdl'} (" in err
    with pytest.raises(DataError, match="was built for another model"):
        save_hybrid_model(tmp_path / "x", model_dir, g.graph_b)
    assert main([*argv[:2], str(g.graph_a), *argv[3:]]) == 0  # the model's own graph decodes


def test_chunked_loglik_matches_reference(trained):
    """Stitched chunk outputs equal running each training window on its own (slow reference)."""
    from pykaldi2.decoding.nnet import NnetComputeConfig, nnet_compute
    from pykaldi2.features.pipeline import ProcessedFeatures
    from pykaldi2.nnet.priors import log_likelihoods
    from pykaldi2.training.model_dir import load_final_dir

    model_dir, _, test = trained
    md = load_final_dir(model_dir)
    feats = ProcessedFeatures(test, md.features)
    utts = list(feats.keys())
    got = dict(
        nnet_compute(md, feats, utts, NnetComputeConfig("chunk", batch_chunks=3, prior_scale=0.5))
    )
    lp = torch.from_numpy(md.log_priors).float()
    c, left, right = md.chunk_size, md.left_context, md.right_context
    for utt in utts:
        x = feats[utt]
        n = len(x)
        ref = np.zeros((n, md.num_pdfs), np.float32)
        start = 0
        while start < n:  # chunks every c frames; the last one shifted back to end at n
            s = min(start, max(n - c, 0))
            idx = np.clip(np.arange(s - left, s + c + right), 0, n - 1)
            with torch.no_grad():
                y = md.model(torch.from_numpy(x[idx])[None], torch.tensor([len(idx)]))[0]
            m = min(c, n - s)
            ref[s : s + m] = log_likelihoods(y[left : left + m], lp, 0.5).numpy()
            start += c
        np.testing.assert_allclose(got[utt], ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match="feature dim 3 but the model expects"):
        list(nnet_compute(md, {"bad": np.zeros((5, 3), np.float32)}, ["bad"]))


def test_adjust_priors_command(trained, tmp_path, capsys):
    """``pykaldi2 adjust-priors``: the new priors are the average softmax over every frame of
    the data (computed here utterance by utterance), the old ones are kept, the copy decodes;
    writing over the model dir or an existing dir is refused."""
    from pykaldi2.features.pipeline import ProcessedFeatures
    from pykaldi2.training.model_dir import load_final_dir

    model_dir, graph, test = trained
    train = model_dir.parent.parent / "train"
    out = tmp_path / "adj"
    assert main(["adjust-priors", "--max-utts", "0", str(model_dir), str(train), str(out)]) == 0
    assert "priors from the average posteriors of 28 utterances" in capsys.readouterr().out
    md = load_final_dir(model_dir)
    feats = ProcessedFeatures(train, md.features)
    total, frames = np.zeros(md.num_pdfs), 0
    for utt in feats:
        x = torch.tensor(feats[utt], dtype=torch.float32)[None]
        with torch.no_grad():
            total += torch.softmax(md.model(x, torch.tensor([x.shape[1]]))[0], -1).sum(0).numpy()
        frames += x.shape[1]
    new = np.load(out / "priors.npy")
    np.testing.assert_allclose(new, total / frames, rtol=1e-4)
    assert abs(new.sum() - 1) < 1e-9 and not np.array_equal(new, np.load(model_dir / "priors.npy"))
    np.testing.assert_array_equal(
        np.load(out / "priors_prev.npy"), np.load(model_dir / "priors.npy")
    )
    argv = ["decode-nnet", str(out), str(graph), str(test), str(tmp_path / "dec")]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("%WER 0.00")

    assert main(["adjust-priors", str(model_dir), str(train), str(model_dir)]) == 1
    assert "the output dir is the model dir" in capsys.readouterr().err
    assert main(["adjust-priors", str(model_dir), str(train), str(out)]) == 1
    assert "output dir exists" in capsys.readouterr().err


def test_priors_from_posteriors_keeps_unseen_pdfs():
    from pykaldi2.decoding.adjust_priors import priors_from_posteriors
    from pykaldi2.nnet.priors import UNSEEN_PRIOR

    old = np.array([0.5, UNSEEN_PRIOR, 0.5, 0.0 + 1e-9])
    got = priors_from_posteriors(np.array([3.0, 5.0, 1.0, 0.0]), old, floor=1e-6)
    assert got[1] == UNSEEN_PRIOR
    seen = [0, 2, 3]
    assert abs(got[seen].sum() - 1) < 1e-12 and got[3] > 0
    np.testing.assert_allclose(got[0] / got[2], 3.0)
