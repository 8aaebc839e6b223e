#!/usr/bin/env python3
"""AN4 mono trained from real Kaldi's inputs, pass by pass against Kaldi's logs (#15).

Inputs (../shared/data/kaldi_reference/an4, written by Kaldi 5.5): the features (feats.ark,
cmvn.ark, + deltas), lang and exp/mono/0.mdl + tree (gmm-init-mono's output). As
steps/train_mono.sh runs: compile-train-graphs, align-equal-compiled (seed: StringHasher of
the utterance id) + gmm-acc-stats-ali + gmm-est --min-gaussian-occupancy=3, then passes
1 .. num_iters-1: gmm-align-compiled at realign_iters (beam 6 at pass 1, then 10; retry 40),
gmm-acc-stats-ali, gmm-est --mix-up (109 + 29 per pass up to pass 30) --power 0.25.

Each pass prints, ours next to Kaldi's (exp/mono/log/align.X.1.log, acc.X.1.log,
update.X.log): the alignment's likelihood per frame, the statistics' likelihood per frame,
the transition update's objf change, the GMM gain and the Gaussian count; and the largest
difference of the per-utterance likelihoods that acc.X.1.log prints (every 50th utterance)
with the number of them that differ. Kaldi prints 6 significant digits; ``*`` marks a
number of ours that does not round to Kaldi's. With ``--cpp`` the per-utterance likelihoods
are summed in float as gmm-acc-stats-ali sums them (without it, in double: their last digit
may then differ from Kaldi's by rounding alone). With all 40 passes it also compares the
pass-38 alignments with Kaldi's exp/mono/ali.1.gz.

``--cpp`` replaces pykaldi2's numpy statistics and M-step by Kaldi's C++ (kaldi-hmm-gmm's
AccumAmDiagGmm / MleAmDiagGmmUpdate); the two agree to float rounding, so the pair of runs
shows how far float rounding alone carries the training.

    python local/mono_kaldi_parity.py /tmp/mono_parity            # 40 passes, ~2 min
    python local/mono_kaldi_parity.py /tmp/mono_parity_cpp --cpp

The reference is $PYKALDI2_SHARED_DATA/kaldi_reference/an4 (default: ../shared/data beside
the checkout) or --ref.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tri1_kaldi_parity import kaldi_data_dir, parity_parser  # noqa: E402

from pykaldi2.hmm.align import AlignConfig, Aligner, align_equal  # noqa: E402
from pykaldi2.hmm.gmm import GmmAccumulator, MleOptions, gmm_est  # noqa: E402
from pykaldi2.hmm.jobs import kaldi_string_hash  # noqa: E402
from pykaldi2.hmm.kaldi_io import read_kaldi_model, read_tree  # noqa: E402
from pykaldi2.hmm.model import GmmModel  # noqa: E402
from pykaldi2.hmm.mono import MONO_REALIGN_ITERS  # noqa: E402
from pykaldi2.hmm.streams import FeaturePipeline, iter_alis, iter_feats, iter_texts  # noqa: E402
from pykaldi2.hmm.training import gauss_schedule  # noqa: E402
from pykaldi2.kaldi import khg  # noqa: E402
from pykaldi2.lang.lang_dir import load_lang  # noqa: E402


def kaldi_pass(ref: Path, x: int) -> dict:
    """Kaldi's numbers of pass x from exp/mono/log."""
    d = ref / "exp/mono/log"
    up = (d / f"update.{x}.log").read_text()
    acc = (d / (f"acc.{x}.1.log" if x else "align.0.1.log")).read_text()
    out = {
        "like": float(re.search(r"avg like per frame = (-[\d.]+)", up).group(1)),
        "trans": float(re.search(r"objf change is ([-\d.e]+) per frame", up).group(1)),
        "gain": float(re.search(r"GMM update: Overall ([-\d.e]+) objective", up).group(1)),
        "gauss": int(re.search(r"split #Gauss from \d+ to (\d+)", up).group(1)),
        "floored": re.search(r"(\d+) probabilities floored, (\d+) out of", up).groups(),
        "utts": {
            m.group(1): float(m.group(2))
            for m in re.finditer(r"for utterance (\S+) avg\. like is (-[\d.]+) over", acc)
        },
    }
    ali = d / f"align.{x}.1.log"
    m = None
    if x and ali.is_file():
        m = re.search(r"Overall log-likelihood per frame is (-[\d.]+)", ali.read_text())
    out["align"] = float(m.group(1)) if m else None
    return out


def cpp_gmm_est(model: GmmModel, accs, kacc, mixup: int, opts: MleOptions):
    """gmm-est with Kaldi's C++ MleAmDiagGmmUpdate on C++ statistics, then our mixing up
    (khg's SplitByCount draws from its own generator, not rand())."""
    from pykaldi2.hmm.gmm import EstStats, am_arrays, split_by_count

    tcfg = khg.MleTransitionUpdateConfig(
        floor=opts.transition_floor, mincount=opts.transition_min_count
    )
    t_impr, t_count = model.tm.mle_update(accs.trans, tcfg)
    cfg = khg.MleDiagGmmOptions()
    cfg.min_gaussian_occupancy = opts.min_gaussian_occupancy
    cfg.min_gaussian_weight = opts.min_gaussian_weight
    cfg.min_variance = opts.min_variance
    cfg.remove_low_count_gaussians = opts.remove_low_count_gaussians
    impr, count = khg.mle_am_diag_gmm_update(cfg, kacc, int(khg.GmmUpdateFlags.kGmmAll), model.am)
    occs = np.array(
        [np.float32(np.sum(kacc.get_acc(p).occupancy)) for p in range(model.num_pdfs)],
        dtype=np.float32,
    )
    new = split_by_count(am_arrays(model.am), occs, mixup, power=0.25)
    # pdfs that were not split keep Kaldi's C++ DiagGmm as it is (a GmmArrays round trip,
    # means_invvars -> means -> means_invvars, can move them by a float step)
    split_am = new.to_am()
    am = khg.AmDiagGmm()
    for p in range(model.num_pdfs):
        same = split_am.get_pdf(p).num_gauss == model.am.get_pdf(p).num_gauss
        am.add_pdf(model.am.get_pdf(p) if same else split_am.get_pdf(p))
    model.am = am
    return EstStats(
        like_per_frame=kacc.tot_log_like / kacc.tot_count,
        num_frames=int(kacc.tot_count),
        gmm_impr_per_frame=impr / count,
        trans_impr_per_frame=t_impr / t_count,
        num_gauss=int(model.am.num_gauss),
    )


def sig6(v: float) -> float:
    return float(f"{v:.6g}")


def mark(ours: float, kaldi: float | None) -> str:
    if kaldi is None:
        return f"{ours:11.6g}            "
    return f"{ours:11.6g}{'*' if sig6(ours) != kaldi else ' '} {kaldi:10.6g}"


def main() -> None:
    ap = parity_parser(__doc__, 40)
    ap.add_argument("--save-models", action="store_true", help="write OUT/X.mdl of each pass")
    ap.add_argument("--verbose", action="store_true", help="print the utterances that differ")
    ap.add_argument(
        "--cpp",
        action="store_true",
        help="statistics and M-step by Kaldi's C++ (khg AccumAmDiagGmm::AccumulateForGmm, "
        "MleAmDiagGmmUpdate) instead of pykaldi2's numpy; mixing up stays ours",
    )
    args = ap.parse_args()
    ref, out = args.ref, args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lang = load_lang(ref / "lang")
    train = kaldi_data_dir(ref, "train", out)
    tm, am = read_kaldi_model(ref / "exp/mono/0.mdl")
    model = GmmModel(tm=tm, tree=read_tree(ref / "exp/mono/tree"), am=am)
    model.feat_type = "delta"
    feats = dict(iter_feats(train, FeaturePipeline("delta")))
    texts = dict(iter_texts(train, lang))
    aligner = Aligner(model, lang.read_L(), lang.disambig_phones, AlignConfig())
    graphs = {utt: aligner.graph(utt, words) for utt, words in texts.items()}
    schedule = gauss_schedule(model.num_pdfs, 1000, 30)
    print(
        "pass  align like (ours / Kaldi)   acc like (ours / Kaldi)     trans objf (ours / Kaldi)"
        "   GMM gain (ours / Kaldi)     #Gauss   per-utt: max |diff|, n not Kaldi's"
    )
    alis: dict[str, np.ndarray] = {}
    for x in range(args.num_iters):
        k = kaldi_pass(ref, x)
        align_like = None
        if x == 0:
            for utt, g in graphs.items():
                ali = align_equal(g, len(feats[utt]), kaldi_string_hash(utt))
                if ali is not None:
                    alis[utt] = ali
        elif x in MONO_REALIGN_ITERS:
            cfg = AlignConfig(beam=6.0 if x == 1 else 10.0, retry_beam=40.0)
            al = Aligner(model, lang.read_L(), lang.disambig_phones, cfg)
            new, like, frames, retried = {}, 0.0, 0, 0
            for utt, g in graphs.items():
                ali, lk, retry = al.align_graph(utt, g, feats[utt])
                retried += retry
                if ali is not None:
                    new[utt], like, frames = ali, like + lk, frames + len(ali)
            alis, align_like = new, like / frames
            if args.verbose:
                print(f"      aligned {len(new)}/{len(graphs)}, retried {retried}, {frames} frames")
        acc = GmmAccumulator(model)
        per_utt = {}
        kacc = None
        if args.cpp:
            kacc = khg.AccumAmDiagGmm()
            kacc.init(model=model.am, flags=khg.GmmUpdateFlags.kGmmAll)
        for utt, ali in alis.items():
            acc.add(utt, feats[utt], ali)
            if kacc is not None:  # gmm-acc-stats-ali: the utterance's like summed in float
                like_utt = np.float32(0.0)
                for row, pdf in zip(feats[utt], model.tid2pdf[ali].tolist()):
                    like_utt += np.float32(kacc.accumulate_for_gmm(model.am, row, pdf, 1.0))
                per_utt[utt] = float(like_utt) / len(ali)
            elif utt in k["utts"]:
                one = GmmAccumulator(model)
                one.add(utt, feats[utt], ali)
                per_utt[utt] = one.finish().like_per_frame
        accs = acc.finish()
        opts = MleOptions(min_gaussian_occupancy=3.0 if x == 0 else 10.0)
        if kacc is None:
            est = gmm_est(model, accs, mixup=schedule(x), power=0.25, opts=opts)
        else:
            est = cpp_gmm_est(model, accs, kacc, schedule(x), opts)
            accs.tot_like = kacc.tot_log_like
        per_utt = {u: v for u, v in per_utt.items() if u in k["utts"]}
        if args.verbose:
            for u, v in per_utt.items():
                if sig6(v) != k["utts"][u]:
                    print(f"      {u} {len(alis[u])} frames: ours {v:.7g} Kaldi {k['utts'][u]}")
        diffs = [abs(v - k["utts"][u]) for u, v in per_utt.items()]
        big = sum(sig6(v) != k["utts"][u] for u, v in per_utt.items())
        print(
            f"{x:4d}  {mark(align_like, k['align']) if align_like else ' ' * 23}   "
            f"{mark(est.like_per_frame, k['like'])}   "
            f"{mark(est.trans_impr_per_frame, k['trans'])}   "
            f"{mark(est.gmm_impr_per_frame, k['gain'])}   {est.num_gauss:4d} {k['gauss']:4d}   "
            f"{max(diffs, default=0):.5f} ({big}/{len(diffs)})",
            flush=True,
        )
        if args.save_models:
            model.save(out / f"{x + 1}.mdl")
    kaldi_ali = ref / "exp/mono/ali.1.gz"  # Kaldi's realignment of pass 38
    if args.num_iters == 40 and kaldi_ali.is_file():
        tid2phone = model.tid2phone
        same_tid = same_phone = total = 0
        for utt, k_ali in iter_alis([kaldi_ali]):
            ours = alis.get(utt)
            if ours is None or len(ours) != len(k_ali):
                continue
            same_tid += int(np.sum(ours == k_ali))
            same_phone += int(np.sum(tid2phone[ours] == tid2phone[k_ali]))
            total += len(k_ali)
        print(
            f"pass-38 alignments against Kaldi's exp/mono/ali.1.gz: {same_phone / total:.2%} of "
            f"frames the same phone, {same_tid / total:.2%} the same transition-id"
        )
    model.info = {"system": "mono from Kaldi's AN4 inputs (egs/an4/local/mono_kaldi_parity.py)"}
    model.save(out / "final.mdl")
    print(f"wrote {out / 'final.mdl'} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
