"""bench/scale.py writes training configs from templates; they must stay valid as the config
classes change (a stale ``model:`` section once failed the ce-epoch stage of every full run,
after an hour of the other stages). Each template is formatted as the bench formats it, loaded
by the class its command loads it with, and its model built. Its Python steps run on Kaldi's
AN4 tri1 system the way the bench runs them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench_modules import load_bench
from kaldi_reference_data import kaldi_data_subset

from pykaldi2.hmm.mono import MonoConfig
from pykaldi2.hmm.tri import DeltasConfig
from pykaldi2.training.ce import TrainCEConfig
from pykaldi2.training.chain import TrainChainConfig, chain_model_config
from pykaldi2.training.model_dir import build_chain_model, build_model, model_config


def test_scale_bench_configs_load_and_build(tmp_path):
    b = load_bench("scale")
    paths = {"data": str(tmp_path / "data"), "ali": str(tmp_path / "ali")}
    (tmp_path / "ce.yaml").write_text(b.CE_YAML.format(**paths))
    ce = TrainCEConfig.load(tmp_path / "ce.yaml")
    model = build_model(ce.model_type, model_config(ce.model_type, ce.model, 13, 100))
    assert sum(p.numel() for p in model.parameters()) > 0
    (tmp_path / "chain.yaml").write_text(b.CHAIN_YAML.format(**paths))
    cc = TrainChainConfig.load(tmp_path / "chain.yaml")
    mcfg, subsample = chain_model_config(cc, 40, 100)
    chain = build_chain_model(cc.model_type, mcfg, subsample, cc.chain.xent_regularize > 0)
    assert chain.left_context > 0 and chain.right_context > 0
    (tmp_path / "mono.yaml").write_text(b.MONO_YAML.format(iters=10, inc=8, realign="[1, 2]"))
    assert MonoConfig.from_yaml(tmp_path / "mono.yaml").num_iters == 10
    (tmp_path / "tri1.yaml").write_text(b.TRI_YAML)
    assert DeltasConfig.from_yaml(tmp_path / "tri1.yaml").num_leaves == 1000


def test_scale_bench_latgen_steps_run(kaldi_ref, tmp_path):
    """The latgen stage's two steps (log-likelihoods to an ark, then lattices from it in a
    1-worker pool) on 3 utterances of Kaldi's an4 test set with Kaldi's tri1 model and graph."""
    b = load_bench("scale")
    exp = kaldi_ref / "an4" / "exp" / "tri1"
    data = kaldi_data_subset(kaldi_ref, tmp_path / "data", 3, split="test")
    out = tmp_path / "loglik_dec"
    proc = subprocess.run(b.py_step(b.LATGEN_LOGLIK) + [str(data), str(exp), str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    Path(f"{out}.scp.tmp").rename(f"{out}.scp")
    assert len(Path(f"{out}.scp").read_text().splitlines()) == 3
    lens = [int(line.split()[1]) for line in (data / "utt2num_frames").read_text().splitlines()]
    assert len(lens) == 3 and min(lens) > 0
    # a frame budget below any two utterances: 3 batches, so the 2-in-flight prefetch is run
    cmd = b.py_step(b.LATGEN) + [f"{out}.scp", str(data), str(exp), str(exp / "graph"), "1",
                                 str(min(lens))]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "lattices"]
