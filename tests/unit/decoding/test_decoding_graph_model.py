"""A graph used with another model than the one it was built for is refused (#18 item 2):
mkgraph records the model's identity (GRAPH_DIR/model_id), and decode, export-gmm-model,
export-hybrid-model and the transcribers check it; graph dirs without it (Kaldi's, older ones)
get steps/decode.sh's pdf-count check. The two tiny models here have the same tree, GMMs and
pdf count and differ only in their topology, so only the identity tells them apart."""

from __future__ import annotations

import logging
import shutil

import kaldiio
import pytest

from pykaldi2.cli.main import main
from pykaldi2.hmm.ali import transition_model_id
from pykaldi2.utils.errors import DataError

UTTS = {"spk1-u1": ["B", "A", "C"], "spk1-u2": ["C"]}


@pytest.fixture()
def loglik(tiny, tmp_path):
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/ll.ark,{tmp_path}/ll.scp") as w:
        for u, ws in UTTS.items():
            w[u] = tiny.loglik_for(ws)
    return tmp_path / "ll.scp"


def test_mkgraph_records_the_models_identity(tiny, tiny_graphs):
    g = tiny_graphs
    assert (g.graph_a / "model_id").read_text() == transition_model_id(tiny.tm) + "\n"
    assert (g.graph_b / "model_id").read_text() == transition_model_id(g.tm_b) + "\n"
    assert (g.graph_a / "num_pdfs").read_text() == (g.graph_b / "num_pdfs").read_text()


def test_decode_refuses_a_graph_of_another_model(tiny_graphs, loglik, tmp_path, capsys):
    g = tiny_graphs
    out = tmp_path / "dec"
    argv = ["decode", str(g.graph_a), str(g.model_a), str(out), "--loglik", str(loglik)]
    assert main(argv) == 0
    assert (out / "hyp.txt").read_text() == "".join(
        " ".join([u, *ws]) + "\n" for u, ws in UTTS.items()
    )
    # graph b's transition-ids are all within model a's: only the identity catches it
    argv = ["decode", str(g.graph_b), str(g.model_a), str(tmp_path / "x"), "--loglik", str(loglik)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{g.graph_b / 'model_id'}: the graph {g.graph_b / 'HCLG.fst'} was built for " in err
    assert f"another model (model_id {transition_model_id(g.tm_b)[:12]}) than {g.model_a}" in err
    assert f"Fix: rebuild the graph for this model: pykaldi2 mkgraph LANG_DIR {g.model_a}" in err
    assert not (tmp_path / "x" / "hyp.txt").exists()


def test_graph_dirs_without_model_id_get_the_pdf_count_check(
    tiny_graphs, loglik, tmp_path, capsys, caplog
):
    """A graph dir written before model_id (or by Kaldi's mkgraph.sh, which writes num_pdfs):
    accepted when the pdf count matches, with a note that only that was checked; refused when
    it does not; a graph whose transition-ids exceed the model's is refused whatever it says."""
    g = tiny_graphs
    old = tmp_path / "old_graph"
    shutil.copytree(g.graph_a, old)
    (old / "model_id").unlink()
    argv = ["decode", str(old), str(g.model_a), str(tmp_path / "d1"), "--loglik", str(loglik)]
    with caplog.at_level(logging.INFO, logger="pykaldi2.hmm.graph_model"):
        assert main(argv) == 0
    assert f"only its pdf count ({12}) was checked against {g.model_a}" in caplog.text
    (old / "num_pdfs").write_text("13\n")
    assert main(argv) == 1
    assert "was built for a model with 13 pdfs, " in capsys.readouterr().err
    (old / "num_pdfs").unlink()  # nothing to check by: the transition-id range still is
    argv = ["decode", str(old), str(g.model_b), str(tmp_path / "d2"), "--loglik", str(loglik)]
    assert main(argv) == 1
    assert f"the graph has transition-id 24, {g.model_b} only 20" in capsys.readouterr().err


def test_export_gmm_model_refuses_a_graph_of_another_model(tiny, tiny_graphs, tmp_path):
    from pykaldi2.api import save_gmm_model
    from pykaldi2.features.extractors import MfccConfig

    g = tiny_graphs
    feats = MfccConfig().to_dict()
    with pytest.raises(DataError, match="was built for another model"):
        save_gmm_model(tmp_path / "x", g.model_a, g.graph_b, feats)
    assert not (tmp_path / "x").exists()
    md = save_gmm_model(tmp_path / "ok", g.model_a, g.graph_a, feats)
    assert md.config("graph") == {"model_id": transition_model_id(tiny.tm), "num_pdfs": 12}


def test_transcriber_refuses_a_model_dir_with_another_models_graph(tiny_graphs, tmp_path):
    """Model dirs put together by hand (save_model_dir) or exported before the check: the
    recorded graph model_id, else the transition-id range, is checked when the dir loads."""
    import pykaldi2
    from pykaldi2.export.model_dir import save_model_dir
    from pykaldi2.features.extractors import MfccConfig

    g = tiny_graphs

    def model_dir(name, model, graph, record):
        configs = {"features": MfccConfig().to_dict()}
        if record:
            configs["graph"] = {"model_id": (graph / "model_id").read_text().strip()}
        files = {"gmm": model.parent, "HCLG": graph / "HCLG.fst", "words": graph / "words.txt"}
        return save_model_dir(tmp_path / name, "gmm", files=files, configs=configs).path

    pykaldi2.load_model(model_dir("ok", g.model_a, g.graph_a, True))
    with pytest.raises(DataError, match=r"model\.yaml: the model dir's HCLG .* was built for "):
        pykaldi2.load_model(model_dir("b_rec", g.model_a, g.graph_b, True))
    with pytest.raises(DataError, match="the graph has transition-id 24, .* only 20"):
        pykaldi2.load_model(model_dir("a_old", g.model_b, g.graph_a, False))
