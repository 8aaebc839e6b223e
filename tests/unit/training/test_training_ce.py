"""``pykaldi2 train-ce`` on synthetic features + alignments: exact resume, the final dir, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from pykaldi2.cli.main import main

NUM_UTTS = 14


def _ali_model():
    """A monophone GmmModel (phones 1 = sil, 2, 3; 3 states each): transition model + tree."""
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo

    topo = khg.HmmTopology()
    topo.read(make_topo([2, 3], [1], TopoConfig()))
    tree = khg.monophone_context_dependency([1, 2, 3], topo.get_phone_to_num_pdf_classes())
    return GmmModel(tm=khg.TransitionModel(tree, topo), tree=tree, am=khg.AmDiagGmm())


def make_corpus(root, *, drop_alis: int = 0, cut_ali: dict | None = None, seed: int = 0):
    """data/ (feats.scp, utt2spk) + ali/ (final.mdl, tree, ali.ark/scp) under ``root``.

    Frame t of an utterance carries pdf y_t; its feature is a noisy one-hot of y_t (dim =
    num_pdfs), so a small net learns the task in a few steps.
    """
    import kaldiio

    from pykaldi2.hmm.ali import phones_to_ali, write_ali

    model = _ali_model()
    tid2pdf = model.tid2pdf
    num_pdfs = int(model.tm.num_pdfs)
    rng = np.random.default_rng(seed)
    data, ali = root / "data", root / "ali"
    data.mkdir(parents=True)
    alis, utt2spk = {}, []
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for i in range(NUM_UTTS):
            utt = f"spk{i % 3}-u{i:02d}"
            # a path through the HMMs: silence (5 states), phones 2/3 (3 states), silence
            phones = [1, *rng.integers(2, 4, 4).tolist(), 1]
            durs = [int(rng.integers(5, 9)) if p == 1 else int(rng.integers(3, 10)) for p in phones]
            alis[utt] = phones_to_ali(model, phones, durs)
            pdfs = tid2pdf[alis[utt]]
            w[utt] = (np.eye(num_pdfs)[pdfs] + 0.1 * rng.normal(size=(len(pdfs), num_pdfs))).astype(
                np.float32
            )
            utt2spk.append(f"{utt} spk{i % 3}\n")
    (data / "utt2spk").write_text("".join(utt2spk))
    for utt in sorted(alis)[:drop_alis]:
        del alis[utt]
    for utt, n in (cut_ali or {}).items():
        alis[utt] = alis[utt][:n]
    ali.mkdir()
    model.save(ali / "final.mdl")
    write_ali(ali / "ali.ark", alis)
    return data, ali, num_pdfs


def write_config(root, data, ali, **over) -> str:
    cfg = {
        "train_data": [str(data)],
        "ali_dir": [str(ali)],
        "valid_fraction": 0.2,
        "features": {"cmvn": "utterance"},
        "model_type": "blstm",
        "model": {"num_layers": 2, "hidden": 12, "dropout": 0.2},
        "chunk_size": 16,
        "left_context": 2,
        "right_context": 3,
        "batch_size": 4,
        "num_workers": 0,
        "trainer": {
            "lr": 0.01,
            "max_epochs": 3,
            "checkpoint_every": 2,
            "log_every": 1,
            "schedule": {"halving": True},
        },
        **over,
    }
    path = root / "ce.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ce")
    data, ali, num_pdfs = make_corpus(root)
    return root, data, ali, num_pdfs


def _weights(exp):
    return torch.load(exp / "final" / "final.pt", weights_only=False)["model"]


def test_train_ce_resume_is_exact_and_final_dir_loads(corpus, tmp_path, one_thread):
    from pykaldi2.training.model_dir import load_final_dir

    root, data, ali, num_pdfs = corpus
    conf = write_config(tmp_path, data, ali)
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert main(["train-ce", "--config", conf, "--override", "trainer.max_steps=9", str(full)]) == 0
    # The same run, interrupted at step 3 (mid-epoch), then resumed with DataLoader workers.
    first = ["train-ce", "--config", conf, "--override", "trainer.max_steps=3", str(parts)]
    assert main(first) == 0
    assert (parts / "checkpoints" / "ckpt-3.pt").is_file()
    resumed = ["--override", "trainer.max_steps=9", "--override", "num_workers=1"]
    assert main(["train-ce", "--config", conf, *resumed, str(parts)]) == 0
    a, b = _weights(full), _weights(parts)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    # 9 steps cross an epoch boundary: validation ran and was logged.
    valid = [
        yaml.safe_load(line)
        for line in (full / "log" / "valid.jsonl").read_text().split("\n")
        if line
    ]
    assert valid and 0.0 <= valid[0]["acc"] <= 1.0 and valid[0]["frames"] > 0

    md = load_final_dir(full / "final")
    assert md.num_pdfs == num_pdfs and md.chunk_size == 16 and md.left_context == 2
    assert np.exp(md.log_priors).sum() == pytest.approx(1.0)
    saved = yaml.safe_load((full / "final" / "config.yaml").read_text())
    assert saved["config"]["trainer"]["max_steps"] == 9 and "git_sha" in saved["provenance"]
    assert (full / "final" / "tree").read_bytes().startswith(b"\0BContextDependency ")


def test_train_ce_learns(corpus, tmp_path, one_thread):
    """More steps at a higher LR: held-out frame accuracy well above chance (1/num_pdfs)."""
    root, data, ali, num_pdfs = corpus
    conf = write_config(tmp_path, data, ali, trainer={"lr": 0.03, "max_epochs": 8, "log_every": 1})
    assert main(["train-ce", "--config", conf, str(tmp_path / "exp")]) == 0
    lines = (tmp_path / "exp" / "log" / "valid.jsonl").read_text().splitlines()
    accs = [yaml.safe_load(x)["acc"] for x in lines]
    assert len(accs) == 8 and accs[-1] > 0.8 > 5.0 / num_pdfs, accs


def test_bad_inputs_give_clear_errors(tmp_path, capsys, one_thread):
    # Alignments missing for most utterances.
    data, ali, _ = make_corpus(tmp_path / "a", drop_alis=10)
    conf = write_config(tmp_path / "a", data, ali)
    assert main(["train-ce", "--config", conf, str(tmp_path / "a" / "exp")]) == 1
    err = capsys.readouterr().err
    assert "10 of 14 utterances have no usable targets" in err and "no targets" in err
    assert "Fix:" in err

    # One length mismatch beyond the tolerance is dropped; many are an error naming them.
    cut = {f"spk{i % 3}-u{i:02d}": 5 for i in range(6)}
    data, ali, _ = make_corpus(tmp_path / "b", cut_ali=cut)
    conf = write_config(tmp_path / "b", data, ali)
    assert main(["train-ce", "--config", conf, str(tmp_path / "b" / "exp")]) == 1
    err = capsys.readouterr().err
    assert "feature frames vs 5 targets" in err
    conf = write_config(tmp_path / "b", data, ali, max_missing_fraction=0.5)
    over = ["--override", "trainer.max_steps=2"]
    assert main(["train-ce", "--config", conf, *over, str(tmp_path / "b" / "exp")]) == 0

    # A checkpoint from a different model config.
    over += ["--override", "model.hidden=8"]
    assert main(["train-ce", "--config", conf, *over, str(tmp_path / "b" / "exp")]) == 1
    err = capsys.readouterr().err
    assert "different model config" in err and "hidden: checkpoint 12 vs config 8" in err

    # Typos and bad values in the config.
    assert main(["train-ce", "--config", conf, "--override", "chunk_sise=3", "x"]) == 1
    assert "unknown option(s) chunk_sise" in capsys.readouterr().err
    assert main(["train-ce", "--config", conf, "--override", "model_type=lstm", "x"]) == 1
    assert "model_type: 'lstm' not in blstm, tdnnf" in capsys.readouterr().err


def test_alignments_from_another_model(tmp_path, capsys):
    from pykaldi2.hmm.ali import write_ali
    from pykaldi2.training.data import load_pdf_targets
    from pykaldi2.utils.errors import DataError

    data, ali, _ = make_corpus(tmp_path)
    write_ali(ali / "ali.ark", {"spk0-u00": np.array([1, 2, 999], dtype=np.int32)})
    with pytest.raises(DataError, match="spk0-u00.*transition_id 999 outside"):
        load_pdf_targets([ali])
    (ali / "ali.ark").unlink()
    (ali / "ali.scp").unlink()
    with pytest.raises(DataError, match="no alignments"):
        load_pdf_targets([ali])


def test_config_overrides_and_tdnnf(tmp_path):
    from pykaldi2.training.ce import TrainCEConfig
    from pykaldi2.training.config import apply_overrides
    from pykaldi2.training.model_dir import model_config

    d = apply_overrides({"trainer": {"lr": 1.0}}, ["trainer.lr=0.5", "train_data=[a, b]"])
    assert d == {"trainer": {"lr": 0.5}, "train_data": ["a", "b"]}
    # YAML 1.1 reads 2e-5 as a string; overrides read it as the float everyone means
    e = apply_overrides({}, ["trainer.lr=2e-5", "seed=1E3", "name=e5"])
    assert e == {"trainer": {"lr": 2e-5}, "seed": 1000.0, "name": "e5"}
    cfg = TrainCEConfig.from_dict({**d, "ali_dir": "x"})
    assert cfg.trainer.lr == 0.5 and cfg.ali_dir == ["x"]
    again = TrainCEConfig.from_dict(cfg.to_dict())
    assert again == cfg
    mcfg = model_config("tdnnf", {"hidden": 16, "bottleneck": 8, "time_strides": [1, 1]}, 5, 7)
    assert mcfg.input_dim == 5 and mcfg.num_classes == 7
    with pytest.raises(Exception, match="subsampling must be 1"):
        model_config("tdnnf", {"subsampling": 3, "time_strides": [1, 3]}, 5, 7)
    with pytest.raises(Exception, match="model.input_dim=3 but the data give 5"):
        model_config("blstm", {"input_dim": 3}, 5, 7)


@pytest.mark.parametrize("corpus_name", ["an4", "librispeech"])
def test_recipe_configs_load(corpus_name):
    from pathlib import Path

    from pykaldi2.training.ce import TrainCEConfig

    path = Path(__file__).resolve().parents[3] / "egs" / corpus_name / "conf" / "ce_blstm.yaml"
    cfg = TrainCEConfig.load(path)
    assert cfg.model_type == "blstm" and cfg.chunk_size == 80 and cfg.trainer.schedule.halving


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.lr=-0.01", r"TrainCEConfig\.trainer\.lr must be > 0, got -0\.01"),
        ("trainer.lr=0", r"TrainCEConfig\.trainer\.lr must be > 0, got 0"),
        ("trainer.lr=abc", r"TrainCEConfig\.trainer\.lr: expected a number, got 'abc'"),
        ("trainer.max_epochs=1.5", r"trainer\.max_epochs: expected an integer, got 1\.5"),
        ("chunk_size=abc", r"TrainCEConfig\.chunk_size: expected an integer, got 'abc'"),
        ("model.hidden=[32]", r"model\.hidden: expected an integer, got \[32\]"),
        ("model.hidden=-5", r"model\.hidden must be >= 1, got -5"),
        ("trainer.schedule.halving=maybe", r"schedule\.halving: expected true or false"),
    ],
)
def test_bad_config_values_name_the_key(corpus, tmp_path, capsys, override, message):
    """Issue 18 item 8: each of these ended in a traceback from torch (or a "'<=' not supported
    between 'str' and 'int'" without the key), or was accepted (lr=0; max_epochs=1.5 ran 2
    epochs). Now: exit 1 and one line naming the config file and the key."""
    import re

    _, data, ali, _ = corpus
    conf = write_config(tmp_path, data, ali)
    assert main(["train-ce", "--config", conf, "--override", override, str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and conf in err and "Traceback" not in err, err
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_yaml_exponent_strings_are_numbers(corpus, tmp_path):
    """``lr: 2e-5`` in a YAML file is a string to YAML 1.1; a float option takes it as 2e-5."""
    from pykaldi2.training.ce import TrainCEConfig

    _, data, ali, _ = corpus
    conf = write_config(tmp_path, data, ali, trainer={"lr": "2e-5", "max_epochs": 1})
    assert TrainCEConfig.load(conf).trainer.lr == 2e-5


def test_final_dir_checksums_catch_damaged_files(corpus, tmp_path, one_thread):
    """Issue 18 item 9: a truncated final.pt gave an OSError traceback, a flipped byte loaded
    silently. The final dir now has checksums.sha256 (sha256sum format) over every file; the
    loader names the damaged file."""
    import shutil
    import subprocess

    from pykaldi2.training.model_dir import load_final_dir
    from pykaldi2.utils.errors import DataError

    _, data, ali, _ = corpus
    conf = write_config(tmp_path, data, ali)
    exp = tmp_path / "exp"
    assert main(["train-ce", "--config", conf, "--override", "trainer.max_steps=1", str(exp)]) == 0
    final = exp / "final"
    listed = [ln.split("  ", 1)[1] for ln in (final / "checksums.sha256").read_text().splitlines()]
    assert listed == sorted(p.name for p in final.iterdir() if p.name != "checksums.sha256")
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "checksums.sha256"], cwd=final, check=True)
    load_final_dir(final)
    for name, damage in [
        ("final.pt", lambda b: b[: len(b) // 2]),  # truncated
        ("final.pt", lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:]),  # one flipped bit
        ("priors.npy", lambda b: b[:-1] + bytes([b[-1] ^ 0x40])),
        ("features.yaml", lambda b: b.replace(b"chunk_size: 16", b"chunk_size: 61")),
    ]:
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(final, bad)
        (bad / name).write_bytes(damage((bad / name).read_bytes()))
        with pytest.raises(DataError, match=rf"{name}: {name} fails its sha256 check"):
            load_final_dir(bad)
    (bad / "features.yaml").unlink()
    with pytest.raises(DataError, match="missing features.yaml"):
        load_final_dir(bad)


def test_ali_dir_records_the_model_and_train_ce_checks_it(tmp_path, caplog, capsys):
    """Alignments of model A with model B's final.mdl, whose transition ids cover A's (4 phones
    instead of 3): train-ce used to train on them silently."""
    import types

    from pykaldi2.hmm.ali import MODEL_ID, read_ali, transition_model_id, write_ali_dir
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo
    from pykaldi2.training.data import load_alignments, load_pdf_targets
    from pykaldi2.utils.errors import DataError

    data, ali, _ = make_corpus(tmp_path)
    model = GmmModel.load(ali / "final.mdl")
    res = types.SimpleNamespace(alis=read_ali(ali / "ali.ark"), failed=[])
    aligned = write_ali_dir(tmp_path / "ali2", model, res)  # what align-si / align-nnet write
    assert (aligned / MODEL_ID).read_text().strip() == transition_model_id(model.tm)
    load_pdf_targets([aligned])

    topo = khg.HmmTopology()
    topo.read(make_topo([2, 3, 4], [1], TopoConfig()))
    tree = khg.monophone_context_dependency([1, 2, 3, 4], topo.get_phone_to_num_pdf_classes())
    other = GmmModel(tm=khg.TransitionModel(tree, topo), tree=tree, am=khg.AmDiagGmm())
    assert other.tm.num_transition_ids > model.tm.num_transition_ids
    other.save(aligned / "final.mdl")
    for load in (load_pdf_targets, load_alignments):
        with pytest.raises(DataError, match="made with another transition model"):
            load([aligned])
    conf = write_config(tmp_path, data, aligned)
    assert main(["train-ce", "--config", conf, str(tmp_path / "exp")]) == 1
    assert "made with another transition model" in capsys.readouterr().err

    # a Kaldi ali dir (no model_id) is accepted, with a note in the log
    (aligned / MODEL_ID).unlink()
    with caplog.at_level("INFO", logger="pykaldi2.hmm.ali"):
        targets, _ = load_pdf_targets([aligned])
    assert targets and "has no model_id (a Kaldi ali dir?)" in caplog.text


def test_train_ce_killed_at_a_random_point_resumes_exactly(corpus, tmp_path, one_thread):
    """SIGKILL of a running train-ce (its process group) at a random moment after a
    mid-epoch checkpoint, then the same command again: the final weights equal those of an
    uninterrupted run, bit for bit."""
    from kill_resume import check_kill_and_resume

    _, data, ali, _ = corpus
    conf = write_config(tmp_path, data, ali)
    cmd = ["train-ce", "--config", conf, "--override", "trainer.keep_last=100"]
    check_kill_and_resume(cmd, tmp_path, after_step=4, seed=17, weights=_weights)


def test_kill_during_a_checkpoint_write_leaves_a_loadable_checkpoint(corpus, tmp_path):
    """The write of ckpt-6.pt dies half written: ckpt-4.pt and ``latest`` naming it load, the
    resumed run removes the dead write's temp file and ends with the uninterrupted weights."""
    from kill_resume import run_killed_in_checkpoint

    from pykaldi2.training import checkpoint as ck

    _, data, ali, _ = corpus
    conf = write_config(tmp_path, data, ali)
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert main(["train-ce", "--config", conf, str(full)]) == 0
    run_killed_in_checkpoint(["train-ce", "--config", conf, str(parts)], step=6)
    ckpt_dir = parts / "checkpoints"
    (temp,) = ckpt_dir.glob(".ckpt-6.pt.*.tmp")  # the half-written file
    assert not (ckpt_dir / "ckpt-6.pt").exists()
    assert ck.latest_checkpoint(ckpt_dir) == ckpt_dir / "ckpt-4.pt"
    assert ck.load_checkpoint(ckpt_dir / "ckpt-4.pt")["step"] == 4
    assert main(["train-ce", "--config", conf, str(parts)]) == 0
    assert not temp.exists()
    a, b = _weights(full), _weights(parts)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_full_disk_during_a_checkpoint_write_then_resume(corpus, tmp_path, monkeypatch, capsys):
    """ENOSPC injected into the write of ckpt-6.pt (#18; tests/unit/test_disk_full.py fills a
    real tmpfs): train-ce stops with a clear error naming the checkpoint, leaves ckpt-4.pt and
    ``latest`` naming it, no temp file; run again, it resumes to the uninterrupted weights."""
    import errno

    from pykaldi2.training import checkpoint as ck

    _, data, ali, _ = corpus
    conf = write_config(tmp_path, data, ali)
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert main(["train-ce", "--config", conf, str(full)]) == 0
    save = torch.save

    def full_disk_at_6(obj, f, *args, **kw):
        if str(getattr(f, "name", "")).rsplit("/", 1)[-1].startswith(".ckpt-6.pt."):
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", full_disk_at_6)
    assert main(["train-ce", "--config", conf, str(parts)]) == 1
    err = capsys.readouterr().err
    ckpt_dir = parts / "checkpoints"
    assert f"{ckpt_dir / 'ckpt-6.pt'}: no space left on the device (" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["ckpt-2.pt", "ckpt-4.pt", "latest"]
    assert ck.load_checkpoint(ck.latest_checkpoint(ckpt_dir))["step"] == 4
    monkeypatch.setattr(torch, "save", save)
    assert main(["train-ce", "--config", conf, str(parts)]) == 0
    a, b = _weights(full), _weights(parts)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
