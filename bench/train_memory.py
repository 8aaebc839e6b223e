"""Memory of the trainers' data path as the corpus grows: train-ce and train-transducer on
synthetic corpora of 1x and 4x the utterances (same utterance lengths).

For each trainer and size, two measurements, each in a fresh process:

* ``held``: bytes still allocated (tracemalloc: Python objects and numpy arrays) after the
  trainer's data loading (``load_ce_data`` / ``load_transducer_data``): what the trainer keeps
  per utterance and per frame, and what a forked DataLoader worker inherits;
* ``rss``: the real CLI (``pykaldi2 train-ce`` / ``train-transducer``, one DataLoader worker,
  ``--steps`` steps) sampled every 50 ms from /proc: peak VmRSS of the trainer and of its worker
  (a forked worker's RSS counts the pages it still shares with the trainer), and the worker's
  peak USS (private pages: smaps_rollup's Private_Clean + Private_Dirty).

It prints one row per run, then per trainer the growth from 1x to 4x per added utterance and the
4x / 1x ratios; the last line reads ``train_memory: worst rss ratio R (trainer T, worker W)``.
Run it on another checkout's sources (e.g. the code before targets went to disk) with
``PYTHONPATH=/path/to/other/checkout python bench/train_memory.py``.

    python bench/train_memory.py [--utts 300] [--frames 1500] [--sizes 1 4] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import yaml

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------
def _ali_model():
    """A monophone GmmModel (phones 1 = sil, 2, 3; 3 states each): transition model + tree."""
    from pykaldi2.hmm.model import GmmModel
    from pykaldi2.kaldi import khg
    from pykaldi2.lang.topo import TopoConfig, make_topo

    topo = khg.HmmTopology()
    topo.read(make_topo([2, 3], [1], TopoConfig()))
    tree = khg.monophone_context_dependency([1, 2, 3], topo.get_phone_to_num_pdf_classes())
    return GmmModel(tm=khg.TransitionModel(tree, topo), tree=tree, am=khg.AmDiagGmm())


def make_corpus(root: Path, num_utts: int, frames: int, seed: int = 0) -> tuple[Path, Path]:
    """data/ (feats.ark/scp: a noisy one-hot of each frame's pdf, text: one letter a 10 frames,
    utt2spk) + ali/ (final.mdl, tree, ali.ark/scp) of ``num_utts`` utterances of about
    ``frames`` frames."""
    import kaldiio

    from pykaldi2.hmm.ali import phones_to_ali, write_ali

    model = _ali_model()
    num_pdfs = int(model.tm.num_pdfs)
    rng = np.random.default_rng(seed)
    data, ali = root / "data", root / "ali"
    data.mkdir(parents=True)
    ali.mkdir()
    alis, texts = {}, []
    with kaldiio.WriteHelper(f"ark,scp:{data}/feats.ark,{data}/feats.scp") as w:
        for i in range(num_utts):
            utt = f"spk{i % 8}-u{i:06d}"
            n = frames // 6
            phones = [1, *rng.integers(2, 4, n).tolist(), 1]
            durs = [int(rng.integers(3, 10)) for _ in phones]
            alis[utt] = phones_to_ali(model, phones, durs)
            pdfs = model.tid2pdf[alis[utt]]
            x = np.eye(num_pdfs)[pdfs] + 0.1 * rng.normal(size=(len(pdfs), num_pdfs))
            w[utt] = x.astype(np.float32)
            letters = rng.choice(list(LETTERS), size=max(1, len(pdfs) // 10))
            words = ["".join(letters[j : j + 5]) for j in range(0, len(letters), 5)]
            texts.append(f"{utt} {' '.join(words)}\n")
    (data / "text").write_text("".join(texts))
    (data / "utt2spk").write_text("".join(f"{t.split()[0]} {t[:4]}\n" for t in texts))
    model.save(ali / "final.mdl")
    write_ali(ali / "ali.ark", alis)
    return data, ali


def write_configs(root: Path, data: Path, ali: Path, steps: int) -> dict[str, Path]:
    common = {"num_workers": 1, "valid_fraction": 0.0}
    trainer = {"max_steps": steps, "max_epochs": 100, "checkpoint_every": 0, "log_every": 10}
    ce = {
        **common,
        "train_data": [str(data)],
        "ali_dir": [str(ali)],
        "features": {"cmvn": "utterance"},
        "model_type": "blstm",
        "model": {"num_layers": 1, "hidden": 16},
        "chunk_size": 40,
        "batch_size": 8,
        "trainer": trainer,
    }
    rnnt = {
        **common,
        "train_data": [str(data)],
        "tokenizer": {"vocab_size": 40, "model_type": "bpe"},
        "frontend": {"cmvn": "none", "frame_stack": 1, "frame_subsample": 1},
        "model_size": "tiny",
        "model": {"enc_n_hid": 16, "pred_n_hid": 8, "joint_n_hid": 16},
        "batch_size": 2,
        "ema_decay": 0.0,
        "trainer": trainer,
    }
    out = {}
    for name, cfg in (("ce", ce), ("transducer", rnnt)):
        out[name] = root / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(cfg))
    return out


# ---------------------------------------------------------------------------------------------
# Measurements (children)
# ---------------------------------------------------------------------------------------------
def held_bytes(trainer: str, conf: Path, work: Path) -> int:
    """Bytes allocated and still held after the trainer's data loading (tracemalloc)."""
    import gc
    import inspect

    # what the loading imports is not data: import it first
    import pykaldi2.data.datasets  # noqa: F401
    import pykaldi2.hmm.exp_dir  # noqa: F401
    import pykaldi2.hmm.model  # noqa: F401
    import pykaldi2.kaldi  # noqa: F401
    import pykaldi2.lang.tokenizer  # noqa: F401

    tracemalloc.start()
    if trainer == "ce":
        from pykaldi2.training.ce import TrainCEConfig
        from pykaldi2.training.ce_egs import load_ce_data

        cfg = TrainCEConfig.load(conf)
        sig = inspect.signature(load_ce_data).parameters
        kw = {"egs_dir": work / "egs"} if "egs_dir" in sig else {}
        held = load_ce_data(cfg, **kw)
    else:
        from pykaldi2.lang.tokenizer import Tokenizer, train_tokenizer
        from pykaldi2.training.transducer import TrainTransducerConfig
        from pykaldi2.training.transducer_egs import load_transducer_data

        cfg = TrainTransducerConfig.load(conf)
        tracemalloc.stop()  # the tokenizer's training is not the data path
        tok_dir = work / "tokenizer"
        if not (tok_dir / "tokenizer.model").is_file():
            train_tokenizer(cfg.train_data, tok_dir, cfg.tokenizer)
        tok = Tokenizer(tok_dir / "tokenizer.model")
        gc.collect()
        tracemalloc.start()
        sig = inspect.signature(load_transducer_data).parameters
        kw = {"egs_dir": work / "egs"} if "egs_dir" in sig else {}
        held = load_transducer_data(cfg, tok, 1, **kw)
    gc.collect()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return current


def _status(pid: int, smaps: bool = False) -> dict[str, int]:
    """VmRSS (and with ``smaps`` Pss and the private pages, USS) of ``pid``, in bytes."""
    out = {}
    files = [f"/proc/{pid}/status"] + ([f"/proc/{pid}/smaps_rollup"] if smaps else [])
    try:
        for f in files:
            for line in Path(f).read_text().splitlines():
                k, _, v = line.partition(":")
                if k in ("VmRSS", "Pss", "Private_Clean", "Private_Dirty"):
                    out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    out["USS"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def rss_run(trainer: str, conf: Path, exp: Path) -> dict[str, int]:
    """Peak VmRSS of the trainer and of its DataLoader worker, and the worker's peak USS (its
    private pages: what it copied or allocated itself, not what it shares with the trainer), of
    ``pykaldi2 train-<trainer>`` sampled every 50 ms. Children seen in fewer than 10 samples
    (e.g. ``git`` for the config's provenance, whose RSS is the trainer's until it execs) are
    not workers."""
    cmd = [sys.executable, "-m", "pykaldi2", f"train-{trainer}", "--config", str(conf), str(exp)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYKALDI2_NO_PROGRESS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"trainer_rss": 0, "worker_rss": 0, "worker_uss": 0}
    seen: dict[int, list[dict[str, int]]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            st = _status(proc.pid)
            peak["trainer_rss"] = max(peak["trainer_rss"], st.get("VmRSS", 0))
            for kid in _children(proc.pid):
                seen.setdefault(kid, []).append(_status(kid, smaps=True))
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out = proc.communicate()[0].decode(errors="replace")
    done.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    for samples in seen.values():
        if len(samples) >= 10:
            peak["worker_rss"] = max(peak["worker_rss"], *(x.get("VmRSS", 0) for x in samples))
            peak["worker_uss"] = max(peak["worker_uss"], *(x["USS"] for x in samples))
    return peak


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def child(args) -> None:
    work = Path(args.work)
    if args.child == "held":
        print(json.dumps({"held": held_bytes(args.trainer, Path(args.conf), work)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utts", type=int, default=300, help="utterances of the 1x corpus")
    ap.add_argument("--frames", type=int, default=1500, help="frames per utterance (about)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4], help="corpus multiples")
    ap.add_argument("--steps", type=int, default=20, help="training steps of each CLI run")
    ap.add_argument("--trainers", nargs="+", default=["ce", "transducer"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--trainer", help=argparse.SUPPRESS)
    ap.add_argument("--conf", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    import pykaldi2

    print(f"pykaldi2 from {Path(pykaldi2.__file__).parent}")
    rows: dict[tuple[str, int], dict] = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYKALDI2_NO_PROGRESS="1")
    with tempfile.TemporaryDirectory(prefix="pykaldi2-train-memory-") as tmp:
        for size in args.sizes:
            root = Path(tmp) / f"x{size}"
            data, ali = make_corpus(root, args.utts * size, args.frames)
            from pykaldi2.features.storage import open_features

            feats = open_features(data)
            frames = sum(feats.shape(u)[0] for u in feats)
            confs = write_configs(root, data, ali, args.steps)
            for trainer in args.trainers:
                work = root / f"held_{trainer}"
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "held", "--trainer", trainer,
                     "--conf", str(confs[trainer]), "--work", str(work)],
                    env=env, capture_output=True, text=True,
                )  # fmt: skip
                if out.returncode != 0:
                    raise RuntimeError(out.stderr[-3000:])
                held = json.loads(out.stdout.strip().splitlines()[-1])["held"]
                peak = rss_run(trainer, confs[trainer], root / f"exp_{trainer}")
                row = {"utts": args.utts * size, "frames": frames, "held": held, **peak}
                rows[(trainer, size)] = row
                print(
                    f"{trainer:10s} x{size}: {row['utts']:6d} utts {frames:9d} frames | held "
                    f"{held / 2**20:8.2f} MiB | trainer rss {peak['trainer_rss'] / 2**20:7.1f} "
                    f"MiB | worker rss {peak['worker_rss'] / 2**20:7.1f} MiB, uss "
                    f"{peak['worker_uss'] / 2**20:7.1f} MiB",
                    flush=True,
                )
    lo, hi = min(args.sizes), max(args.sizes)
    worst = (0.0, 0.0, 0.0)
    for trainer in args.trainers:
        a, b = rows[(trainer, lo)], rows[(trainer, hi)]
        du, df = b["utts"] - a["utts"], b["frames"] - a["frames"]
        per_utt = (b["held"] - a["held"]) / du
        ratios = {k: b[k] / max(a[k], 1) for k in ("trainer_rss", "worker_rss", "worker_uss")}
        print(
            f"{trainer}: x{lo} -> x{hi}: held +{per_utt:.0f} B per added utterance "
            f"({(b['held'] - a['held']) / df:.2f} B per added frame); rss ratio trainer "
            f"{ratios['trainer_rss']:.3f}, worker {ratios['worker_rss']:.3f}, worker uss "
            f"{ratios['worker_uss']:.3f}"
        )
        r = max(ratios["trainer_rss"], ratios["worker_rss"])
        if r > worst[0]:
            worst = (r, ratios["trainer_rss"], ratios["worker_rss"])
    print(
        f"train_memory: worst rss ratio {worst[0]:.3f} (trainer {worst[1]:.3f}, worker "
        f"{worst[2]:.3f})"
    )


if __name__ == "__main__":
    main()
