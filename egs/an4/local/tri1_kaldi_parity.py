#!/usr/bin/env python3
"""AN4 tri1 trained from real Kaldi's inputs, iteration by iteration against Kaldi's logs (#15).

Inputs (../shared/data/kaldi_reference/an4, written by Kaldi 5.5): the features (feats.ark,
cmvn.ark, + deltas), lang, exp/mono_ali/ali.1.gz and exp/tri1/tree. As train_deltas.sh 500
2500 runs: acc-tree-stats, gmm-init-model, gmm-mixup 500, convert-ali, 34 passes of
gmm-acc-stats-ali + gmm-est (--mix-up growing by 80, --power 0.25), realigned at 10, 20, 30
(beam 10, retry 40). Each pass prints our likelihood per frame, Gaussian count and GMM gain
next to Kaldi's (exp/tri1/log/update.X.log), and how far our numpy M-step lies from Kaldi's
C++ MleAmDiagGmmUpdate (kaldi-hmm-gmm) run on the same statistics (before mixing up: khg's
Split draws from its own random generator, not Kaldi's rand()). Writes OUT/final.mdl, which
`pykaldi2 mkgraph` + `decode --data` + `score` decode like any model.

    python local/tri1_kaldi_parity.py /tmp/tri1_parity        # ~1 min, one process

The reference is $PYKALDI2_SHARED_DATA/kaldi_reference/an4 (default: ../shared/data beside
the checkout) or --ref.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from pykaldi2.hmm.align import AlignConfig, Aligner
from pykaldi2.hmm.gmm import (
    GmmAccumulator,
    MleOptions,
    am_arrays,
    gmm_est,
    gmm_mixup,
    mle_am_diag_gmm_update,
)
from pykaldi2.hmm.kaldi_io import read_tree
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.streams import FeaturePipeline, iter_alis, iter_feats, iter_texts
from pykaldi2.hmm.training import gauss_schedule
from pykaldi2.hmm.tree_stats import TreeStatsAccumulator
from pykaldi2.hmm.tri import convert_ali, gmm_init_model
from pykaldi2.kaldi import khg
from pykaldi2.lang.lang_dir import load_lang

SHARED = (
    os.environ.get("PYKALDI2_SHARED_DATA") or Path(__file__).resolve().parents[4] / "shared/data"
)
REF = Path(SHARED) / "kaldi_reference" / "an4"


def kaldi_data_dir(ref: Path, name: str, out: Path) -> Path:
    """Kaldi's data/NAME as a data dir of ours (tables copied, scp paths made absolute)."""
    src, dst = ref / "data" / name, out / "kaldi_data" / name
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("text", "utt2spk", "spk2utt", "utt2num_frames"):
        (dst / f).write_text((src / f).read_text())
    (dst / "wav.scp").write_text((src / "wav_flac.scp").read_text())
    for f in ("feats.scp", "cmvn.scp"):
        rows = (line.split(maxsplit=1) for line in (src / f).read_text().splitlines())
        (dst / f).write_text("".join(f"{k} {ref / loc}\n" for k, loc in rows))
    return dst


def kaldi_update_log(ref: Path, x: int) -> dict:
    text = (ref / f"exp/tri1/log/update.{x}.log").read_text()
    return {
        "like": float(re.search(r"avg like per frame = (-[\d.]+)", text).group(1)),
        "gauss": int(re.search(r"split #Gauss from \d+ to (\d+)", text).group(1)),
        "gain": float(re.search(r"GMM update: Overall ([-\d.e]+) objective", text).group(1)),
    }


def cpp_mle_update(model: GmmModel, accs, opts: MleOptions):
    """Kaldi's MleAmDiagGmmUpdate (khg's C++) on ``accs``. The binding's get_acc returns a
    copy, so the statistics go in through accumulate_from_posteriors: two points m +- s per
    Gaussian, half its occupancy each (occupancy, sum and sum of squares exact up to the
    float32 of the points)."""
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(model.am)
    kacc = khg.AccumAmDiagGmm()
    kacc.init(model=am, flags=khg.GmmUpdateFlags.kGmmAll)
    for p in range(am.num_pdfs):
        a, b = int(accs.offsets[p]), int(accs.offsets[p + 1])
        for g in range(a, b):
            n = accs.occ[g]
            if n <= 0:
                continue
            m = accs.x1[g] / n
            s = np.sqrt(np.maximum(accs.x2[g] / n - m * m, 0.0))
            post = np.zeros(b - a, np.float32)
            post[g - a] = n / 2
            for point in (m + s, m - s):
                kacc.accumulate_from_posteriors(am, point.astype(np.float32), p, post)
    cfg = khg.MleDiagGmmOptions()
    cfg.min_gaussian_occupancy = opts.min_gaussian_occupancy
    cfg.min_gaussian_weight = opts.min_gaussian_weight
    cfg.min_variance = opts.min_variance
    cfg.remove_low_count_gaussians = opts.remove_low_count_gaussians
    khg.mle_am_diag_gmm_update(cfg, kacc, int(khg.GmmUpdateFlags.kGmmAll), am)
    return am


def max_diff(am_ours, am_kaldi) -> dict:
    a, b = am_arrays(am_ours), am_arrays(am_kaldi)
    if not np.array_equal(a.offsets, b.offsets):
        return {"same_gaussians": False}
    return {
        "weight_rel": float(np.max(np.abs(a.weights - b.weights) / b.weights)),
        "mean_in_sd": float(np.max(np.abs(a.means - b.means) * np.sqrt(b.inv_vars))),
        "inv_var_rel": float(np.max(np.abs(a.inv_vars - b.inv_vars) / b.inv_vars)),
    }


def parity_parser(doc: str, num_iters: int) -> argparse.ArgumentParser:
    """The options every *_kaldi_parity.py script takes: OUT, --ref, --num-iters."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--ref", type=Path, default=REF, help="kaldi_reference/an4")
    ap.add_argument("--num-iters", type=int, default=num_iters)
    return ap


def main() -> None:
    ap = parity_parser(__doc__, 35)
    ap.add_argument(
        "--seed",
        type=int,
        default=1,
        help="start of the mixing-up perturbations' rand() stream (1: Kaldi's; others: how "
        "much the result varies with them)",
    )
    args = ap.parse_args()
    ref, out = args.ref, args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lang = load_lang(ref / "lang")
    train = kaldi_data_dir(ref, "train", out)
    kaldi_data_dir(ref, "test", out)
    topo = lang.read_topo()
    n2c = topo.get_phone_to_num_pdf_classes()
    mono_tree = khg.monophone_context_dependency_shared(
        phone_classes=lang.read_int_sets("sets"), phone2num_pdf_classes=n2c
    )
    mono = GmmModel(
        tm=khg.TransitionModel(ctx_dep=mono_tree, hmm_topo=topo), tree=mono_tree, am=None
    )
    feats = dict(iter_feats(train, FeaturePipeline("delta")))
    mono_ali = dict(iter_alis([ref / "exp/mono_ali/ali.1.gz"]))
    tree_acc = TreeStatsAccumulator(mono, lang.silence_phones)
    for utt, ali in mono_ali.items():
        tree_acc.add(utt, feats[utt], ali)
    stats = tree_acc.result()
    tree = read_tree(ref / "exp/tri1/tree", as_khg=False)
    model, occs = gmm_init_model(
        tree.to_pdf, tree.context_width, tree.central_position, topo, stats
    )
    model.feat_type = "delta"
    gmm_mixup(
        model, occs, 500, seed=args.seed
    )  # train_deltas.sh: gmm-mixup --mix-up=$numleaves (power 0.2)
    alis = {utt: convert_ali(mono, model, ali) for utt, ali in mono_ali.items()}
    texts = dict(iter_texts(train, lang))
    schedule = gauss_schedule(500, 2500, 25)
    opts = MleOptions()
    print("iter  like (ours / Kaldi)    #Gauss (ours / Kaldi)  GMM gain (ours / Kaldi)  "
          "numpy vs C++ M-step")  # fmt: skip
    for x in range(1, args.num_iters):
        if x in (10, 20, 30):
            aligner = Aligner(model, lang.read_L(), lang.disambig_phones, AlignConfig())
            new, like, frames = {}, 0.0, 0
            for utt, words in texts.items():
                ali, lk, _ = aligner.align(utt, words, feats[utt])
                if ali is not None:
                    new[utt], like, frames = ali, like + lk, frames + len(ali)
            alis = new
            print(f"realign {x}: {len(alis)} utterances, {like / frames:.4f} per frame")
        acc = GmmAccumulator(model)
        for utt, ali in alis.items():
            acc.add(utt, feats[utt], ali)
        accs = acc.finish()
        ours_mle, _ = mle_am_diag_gmm_update(am_arrays(model.am), accs, opts)
        diff = max_diff(ours_mle.to_am(), cpp_mle_update(model, accs, opts))
        est = gmm_est(
            model, accs, mixup=schedule(x), power=0.25, opts=opts, seed=args.seed
        )  # as train-deltas
        k = kaldi_update_log(ref, x)
        print(
            f"{x:4d}  {accs.like_per_frame:9.4f} {k['like']:9.4f}   {est.num_gauss:5d} "
            f"{k['gauss']:5d}        {est.gmm_impr_per_frame:.6f} {k['gain']:.6f}     "
            f"{json.dumps(diff)}",
            flush=True,
        )
    model.info = {"system": "tri1 from Kaldi's AN4 inputs (egs/an4/local/tri1_kaldi_parity.py)"}
    model.save(out / "final.mdl")
    print(f"wrote {out / 'final.mdl'} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
