"""``pykaldi2 decode`` (log-likelihoods and GMM features) and ``pykaldi2 score`` end to end."""

from __future__ import annotations

import kaldiio

from pykaldi2.cli.main import main

UTTS = {"spk1-u1": ["B", "A", "C"], "spk1-u2": ["C"], "spk2-u3": ["A", "A"]}


def test_decode_and_score_commands(tiny, tiny_am, tmp_path, capsys):
    from pykaldi2.hmm.model import GmmModel

    model = tmp_path / "final.mdl"
    GmmModel(tm=tiny.tm, tree=tiny.ctx, am=tiny_am.am).save(model)
    graph = tmp_path / "graph"
    graph.mkdir()
    tiny.hclg.fst.write(str(graph / "HCLG.fst"))
    (graph / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in tiny.words.items()))
    ref = tmp_path / "text"
    ref.write_text("".join(" ".join([u, *ws]) + "\n" for u, ws in UTTS.items()))
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/ll.ark,{tmp_path}/ll.scp") as w:
        for u, ws in UTTS.items():
            w[u] = tiny.loglik_for(ws)
    with kaldiio.WriteHelper(f"ark:{tmp_path}/feats.ark") as w:
        for u, ws in UTTS.items():
            w[u] = tiny_am.feats_for(ws)

    out = tmp_path / "decode_ll"
    argv = ["decode", str(graph), str(model), str(out), "--loglik", str(tmp_path / "ll.scp")]
    assert main(argv + ["--ref", str(ref)]) == 0
    assert capsys.readouterr().out.startswith("%WER 0.00 [ 0 / 6, 0 ins, 0 del, 0 sub ] ")
    assert (out / "hyp.txt").read_text() == ref.read_text()

    out = tmp_path / "decode_gmm"
    argv = ["decode", str(graph), str(model), str(out), "--feats", str(tmp_path / "feats.ark")]
    assert main(argv + ["--beam", "20"]) == 0
    assert (out / "hyp.txt").read_text() == ref.read_text()
    # A reference with one word wrong and one utterance missing from the hyps.
    ref.write_text("spk1-u1 B A B\nspk1-u2 C\nspk2-u3 A A\nspk9-u9 A\n")
    argv = ["score", str(out), "--ref", str(ref), "--min-lmwt", "9", "--max-lmwt", "11"]
    assert main(argv + ["--word-ins-penalties", "0,0.5"]) == 0
    best = capsys.readouterr().out
    assert best == f"%WER 16.67 [ 1 / 6, 0 ins, 0 del, 1 sub ] [PARTIAL] {out / 'wer_10_0.0'}\n"
    assert (out / "wer_9_0.5").read_text().endswith("Scored 3 sentences, 1 not present in hyp.\n")
    assert main(["score", str(tmp_path), "--ref", str(ref)]) == 1  # no lattices there

    # --tuned-on: the other decode dir scored only at the setting chosen on `out` (a "dev" set)
    test_dir = tmp_path / "decode_ll"
    argv = ["score", str(test_dir), "--ref", str(ref), "--tuned-on", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.endswith(f"{test_dir / 'wer_10_0.0'}\n")
    assert (test_dir / "tuned_on").read_text().startswith(f"LMWT 10 WIP 0.0 chosen on {out}")
    assert (test_dir / "best_wer").read_text().split(" [")[0] == (
        (test_dir / "wer_10_0.0").read_text().split(" [")[0]
    )
