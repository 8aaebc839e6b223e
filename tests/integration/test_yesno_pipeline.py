"""The hybrid pipeline on yesno end to end, in CI time: the GMM part of the recipe (the
``yesno_gmm`` fixture: prepare -> MFCC -> lang -> mono) -> align-si -> train-ce (a tiny BLSTM)
-> mkgraph -> decode-nnet -> export-hybrid-model -> ``pykaldi2.load_model(dir).transcribe``.

A pipeline that silently stopped learning fails on the WER bounds. Also checks the demo recipe
(egs/asterisk/run.sh) is valid bash and that its confs load as the commands' configs.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

EGS = Path(__file__).resolve().parents[2] / "egs"

#: decode-nnet through the mono graph (LMWT sweep); the CE net learns yesno in seconds
MAX_DECODE_WER = 10.0
#: transcribe() decodes at the exported acoustic scale with per-file CMVN
MAX_TRANSCRIBE_WER = 15.0

CE_CONFIG = {
    "features": {"cmvn": "speaker", "norm_vars": False},
    "model_type": "blstm",
    "model": {"num_layers": 1, "hidden": 32, "dropout": 0.0},
    "chunk_size": 80,
    "batch_size": 8,
    "num_workers": 0,
    "valid_fraction": 0.1,
    # 2 of the 5 ergodic silence states get no frames in the mono alignments: with the default
    # floor (1e-8) their log-prior of -18.4 makes them win every frame (all words deleted)
    "prior_floor": 1e-3,
    "trainer": {"optimizer": "adam", "lr": 0.01, "max_epochs": 3, "log_every": 10},
    "seed": 0,
}


def _wer(line: str) -> tuple[float, int]:
    m = re.match(r"%WER ([\d.]+) \[ \d+ / (\d+),", line)
    assert m, line
    return float(m[1]), int(m[2])


def test_yesno_hybrid_pipeline(yesno_gmm, cli, tmp_path: Path, one_thread) -> None:
    import pykaldi2
    from pykaldi2.decoding.scoring import compute_wer, read_text

    t0 = time.perf_counter()
    g = yesno_gmm
    ali, ce, graph = tmp_path / "mono_ali", tmp_path / "blstm_ce", tmp_path / "graph"
    cli("align-si", "--nj", "1", g.train, g.lang, g.mono, ali)
    conf = tmp_path / "ce.yaml"
    conf.write_text(
        yaml.safe_dump({"train_data": [str(g.train)], "ali_dir": [str(ali)], **CE_CONFIG})
    )
    cli("train-ce", "--config", conf, ce)
    cli("mkgraph", g.lang_test, ali / "final.mdl", graph)
    dec = ce / "decode_test_yesno"
    cli("decode-nnet", "--nj", "1", "--no-score", ce / "final", graph, g.test, dec)
    cli("score", "--ref", g.test / "text", "--min-lmwt", "1", "--max-lmwt", "20", dec)
    best = (dec / "best_wer").read_text()
    wer, words = _wer(best)
    assert words == 240  # 30 test files x 8 words
    assert wer <= MAX_DECODE_WER, best

    lmwt = float(re.search(r"wer_([\d.]+)_[\d.]+$", best.strip())[1])
    export = tmp_path / "export"
    cli("export-hybrid-model", "--acoustic-scale", str(1 / lmwt), ce / "final", graph, export)
    utts = sorted(read_text(g.test / "text"))[:10]
    wav_scp = dict(line.split(maxsplit=1) for line in (g.test / "wav.scp").read_text().splitlines())
    hyps = pykaldi2.load_model(export).transcribe([wav_scp[u] for u in utts])
    assert all(h.strip() for h in hyps), hyps
    ref = read_text(g.test / "text")
    stats = compute_wer({u: ref[u] for u in utts}, {u: h.split() for u, h in zip(utts, hyps)})
    assert stats.wer <= MAX_TRANSCRIBE_WER, stats.format()
    print(
        f"yesno hybrid: decode {best.strip()}; transcribe {stats.wer:.2f}% in {time.perf_counter() - t0:.1f} s"
    )


def test_asterisk_recipe_is_valid() -> None:
    """egs/asterisk/run.sh parses; its feature confs are for 8 kHz audio."""
    recipe = EGS / "asterisk"
    subprocess.run(["bash", "-n", str(recipe / "run.sh")], check=True)
    for name in ("mfcc.yaml", "fbank.yaml"):
        assert yaml.safe_load((recipe / "conf" / name).read_text())["sample-frequency"] == 8000


@pytest.mark.parametrize(
    "name, module, cls",
    [
        ("ce_blstm.yaml", "ce", "TrainCEConfig"),
        ("chain_tdnnf.yaml", "chain", "TrainChainConfig"),
        ("transducer.yaml", "transducer", "TrainTransducerConfig"),
    ],
)
def test_asterisk_nnet_confs_load(name: str, module: str, cls: str) -> None:
    """The demo's nnet confs are valid configs of their train commands (a typo fails here,
    not 10 minutes into `make demo`)."""
    import importlib

    config_cls = getattr(importlib.import_module(f"pykaldi2.training.{module}"), cls)
    cfg = config_cls.from_dict(yaml.safe_load((EGS / "asterisk/conf" / name).read_text()))
    assert cfg.trainer.max_epochs > 0


def test_yesno_sat_decode_fmllr(
    yesno_gmm, cli, tmp_path: Path, one_thread, capfd, monkeypatch
) -> None:
    """align-si -> train-sat -> mkgraph -> two-pass decode-fmllr (SI pass with final.alimdl,
    per-speaker fMLLR, adapted passes): Kaldi transforms written, yesno decoded, and the decode
    progress bar knows its total."""
    from pykaldi2.decoding.scoring import read_text
    from pykaldi2.hmm.streams import read_matrix_ark

    g = yesno_gmm
    ali, sat, graph, dec = (tmp_path / n for n in ("mono_ali", "sat", "graph", "decode"))
    cli("align-si", "--nj", "1", g.train, g.lang, g.mono, ali)
    conf = tmp_path / "sat.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "num_leaves": 20,
                "tot_gauss": 80,
                "num_iters": 6,
                "max_iter_inc": 4,
                "realign_iters": [3],
                "fmllr_iters": [2, 4],
            }  # fmt: skip
        )
    )
    cli("train-sat", "--config", conf, g.train, g.lang, ali, sat)
    cli("mkgraph", g.lang_test, sat / "final.mdl", graph)
    capfd.readouterr()
    monkeypatch.setenv("PYKALDI2_NO_PROGRESS", "0")
    cli("decode-fmllr", "--nj", "1", graph, g.test, sat, dec)
    err = capfd.readouterr().err
    n = len(read_text(g.test / "text"))
    assert re.search(rf"decode:.*\b{n}/{n}\b", err), err[-2000:]
    trans = read_matrix_ark(dec / "trans.1")
    assert trans and all(t.shape[1] == t.shape[0] + 1 for t in trans.values())
    cli("score", "--ref", g.test / "text", dec)
    wer, words = _wer((dec / "best_wer").read_text())
    assert words == 240 and wer <= MAX_DECODE_WER, (dec / "best_wer").read_text()
