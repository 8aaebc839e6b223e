#!/usr/bin/env python3
"""Decoding cost: the compiled LatticeFasterDecoder vs the old LatticeSimpleDecoder path, next to
Kaldi's recorded gmm-latgen-faster numbers.

Default: AN4 test (130 utterances) with Kaldi's own final.mdl, HCLG.fst (a ConstFst) and
features from ../shared/data/kaldi_reference (``--system mono|tri1``), as steps/decode.sh
decoded it (max-active 7000, beam 13, lattice-beam 6, acoustic scale 0.1).

Your own system (e.g. the speechocean762 measurement of issue #19)::

    python bench/decoder.py --graph exp/mono/graph --model exp/mono/final.mdl --data data/test \\
        [--utts 60] [--max-active 7000] [--beam 13] [--lattice-beam 6] [--acoustic-scale 0.1]

(--model: our final.mdl or Kaldi's; features as the model was trained: CMVN + deltas or LDA).

Each decoder runs in its own process, one thread: the same GMM log-likelihoods
(:class:`~pykaldi2.decoding.wfst.GmmScorer`) decoded by

* ``new``: :mod:`pykaldi2.hmm.decoder` (max_active, determinized CompactLattices written to a
  gzipped archive, what ``pykaldi2 decode`` does);
* ``old``: kaldi_decoder.LatticeSimpleDecoder over DecodableCtc of the (T, num_transition_ids)
  matrix, the raw lattice parsed from its text form (the code before this decoder; no
  max_active).

Printed per decoder: CPU seconds of the whole process (start-up and loading included) and of the
decoding loop alone, peak RSS, the WER of the lattices scored as score_kaldi.sh (best LMWT x
WIP), and for the default AN4 run Kaldi's gmm-latgen-faster time (its log) and its decode.sh's
CPU and peak RSS (/usr/bin/time -v). ``--decoders new`` skips the slow old path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PYKALDI2_SHARED_DATA", REPO.parent / "shared" / "data"))
KALDI_REF = SHARED / "kaldi_reference"
LMWTS = tuple(range(7, 18))
WIPS = (0.0, 0.5, 1.0)


# ---- inputs -----------------------------------------------------------------------------------
def inputs(graph: str, model_path: str, data: str):
    """(graph path, words.txt, TransitionTables, GmmScorer, features iterator, text or None)."""
    from pykaldi2.data.datadir import read_data_dir
    from pykaldi2.decoding.wfst import GmmScorer
    from pykaldi2.hmm.decoder import TransitionTables
    from pykaldi2.hmm.inputs import feats_for_model
    from pykaldi2.hmm.model import GmmModel

    model = GmmModel.load(model_path)  # ours, or Kaldi's final.mdl
    g = Path(graph)
    hclg = g / "HCLG.fst" if g.is_dir() else g
    utts = sorted(read_data_dir(data).utt2spk)

    def feats():  # streamed in chunks of 50 utterances
        for i in range(0, len(utts), 50):
            yield from sorted(feats_for_model(model, data, utts=utts[i : i + 50]).items())

    text = Path(data) / "text"
    return (hclg, hclg.parent / "words.txt", TransitionTables.from_trans_model(model.tm),
            GmmScorer(model.am), feats, text if text.is_file() else None)  # fmt: skip


def kaldi_args(system: str) -> tuple[str, str, str, Path]:
    """Kaldi's AN4 exp dir as --graph/--model/--data, run from the corpus folder (its scp
    paths are relative to it)."""
    an4 = KALDI_REF / "an4"
    exp = an4 / "exp" / system
    return str(exp / "graph"), str(exp / "final.mdl"), "data/test", an4


# ---- one decoder, in its own process ------------------------------------------------------
def run_worker(args) -> dict:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import numpy as np

    from pykaldi2.decoding.lattice import Lattice, best_paths
    from pykaldi2.decoding.lattice_io import LatticeWriter
    from pykaldi2.decoding.wfst import DecoderConfig, decode_utterance, make_decoder

    hclg, words_txt, tables, scorer, feats, text = inputs(args.graph, args.model, args.data)
    config = DecoderConfig(
        beam=args.beam, max_active=args.max_active, lattice_beam=args.lattice_beam,
        acoustic_scale=args.acoustic_scale,
    )  # fmt: skip
    pairs = [(lm, wip) for wip in WIPS for lm in LMWTS]
    hyps: dict = {p: {} for p in pairs}
    frames = num_utts = num_arcs = 0
    if args.worker == "new":
        decoder = make_decoder(str(hclg), config)
    else:
        from pykaldi2.kaldi import kaldi_decoder, kaldifst

        fst = kaldifst.StdVectorFst.read(str(hclg))
        if fst is None:  # Kaldi's ConstFst, which kaldifst cannot read: through text
            from pykaldi2.hmm.decoder import read_graph

            g = read_graph(hclg)
            a = g.arrays()
            order = np.argsort(a["src"] != g.start, kind="stable")  # start state's arcs first
            lines = [
                f"{a['src'][i]} {a['dst'][i]} {a['ilabel'][i]} {a['olabel'][i]} {a['weight'][i]:.9g}\n"
                for i in order
            ]
            fin = np.flatnonzero(np.isfinite(a["final"]))
            lines += [f"{s} {a['final'][s]:.9g}\n" for s in fin]
            fst = kaldifst.compile("".join(lines))
        opts = kaldi_decoder.LatticeSimpleDecoderConfig(
            beam=args.beam, lattice_beam=args.lattice_beam, prune_interval=25,
            determinize_lattice=False,
        )  # fmt: skip
    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp, LatticeWriter(Path(tmp) / "lat.1.gz") as ark:
        for utt, x in feats():
            if args.utts and num_utts >= args.utts:
                break
            ll = scorer(x)
            if args.worker == "new":
                _, lat = decode_utterance(None, ll, tables, config, utt, decoder)
                ark.write(utt, lat)
            else:
                M = np.ascontiguousarray(args.acoustic_scale * ll[:, tables.tid2pdf[1:]])
                dec = kaldi_decoder.LatticeSimpleDecoder(fst, opts)
                dec.decode(kaldi_decoder.DecodableCtc(M))
                ok, raw = dec.get_raw_lattice(use_final_probs=True)
                lat = Lattice.from_kaldifst(raw, acoustic_scale=args.acoustic_scale)
                ark.write(utt, lat)
            for p, bp in zip(pairs, best_paths(lat, [p[0] for p in pairs], [p[1] for p in pairs])):
                if bp is not None:
                    hyps[p][utt] = bp.words
            frames += len(x)
            num_utts += 1
            num_arcs += lat.num_arcs
    loop_cpu = time.process_time() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    wer = None
    if text is not None:
        from pykaldi2.decoding.scoring import compute_wer, read_text
        from pykaldi2.lang.symbols import SymbolTable

        ref = read_text(text)
        ref = {u: ref[u] for u in hyps[pairs[0]] if u in ref}
        sym = SymbolTable.read(words_txt)
        results = []
        for p in pairs:
            st = compute_wer(ref, {u: sym.syms(w) for u, w in hyps[p].items()}, mode="present")
            results.append((st.wer, f"{p[0]}_{p[1]:.1f}", st.wer_line()))
        best = min(results)
        wer = {"best": best[2], "lmwt_wip": best[1]}
    return {
        "decoder": args.worker,
        "utts": num_utts,
        "frames": frames,
        "lattice_arcs": num_arcs,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "loop_cpu_s": loop_cpu,
        "peak_rss_mb": ru.ru_maxrss / 1024,
        "wer": wer,
    }


# ---- Kaldi's recorded numbers and the report -------------------------------------------------
def kaldi_numbers(system: str) -> dict:
    import re

    d = KALDI_REF / "an4"
    log = (d / "exp" / system / "decode_test" / "log" / "decode.1.log").read_text()
    timed = (d / "times" / f"time_decode_{system}.txt").read_text()

    def grab(pat: str, text: str) -> float:
        return float(re.search(pat, text).group(1))

    return {
        "latgen_wall_s": grab(r"Time taken ([0-9.]+)s", log),
        "decode_sh_cpu_s": grab(r"User time \(seconds\): ([0-9.]+)", timed)
        + grab(r"System time \(seconds\): ([0-9.]+)", timed),
        "decode_sh_peak_rss_mb": grab(r"Maximum resident set size \(kbytes\): (\d+)", timed) / 1024,
        "best_wer": (d / "exp" / system / "decode_test" / "scoring_kaldi" / "best_wer")
        .read_text()
        .strip(),
    }


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--system",
        default="mono",
        choices=["mono", "tri1"],
        help="Kaldi's AN4 system (default: mono)",
    )
    ap.add_argument("--graph", help="own system: graph dir (or HCLG.fst)")
    ap.add_argument("--model", help="own system: pykaldi2 final.mdl")
    ap.add_argument("--data", help="own system: data dir (feats.scp, cmvn.scp, text)")
    ap.add_argument("--utts", type=int, default=0, help="decode only the first N utterances")
    ap.add_argument("--decoders", default="new,old", help="which to run (default: new,old)")
    ap.add_argument("--beam", type=float, default=13.0)
    ap.add_argument("--lattice-beam", type=float, default=6.0)
    ap.add_argument("--max-active", type=int, default=7000)
    ap.add_argument("--acoustic-scale", type=float, default=0.1)
    ap.add_argument("--worker", choices=["new", "old"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    own = bool(args.graph)
    if own and not (args.model and args.data):
        ap.error("--graph needs --model and --data")
    if not own and not KALDI_REF.is_dir():
        print(f"bench/decoder.py: {KALDI_REF} not found (set PYKALDI2_SHARED_DATA)")
        return 0
    cwd = Path.cwd()
    if not own:
        args.graph, args.model, args.data, cwd = kaldi_args(args.system)
    passthrough = []
    for opt in ("graph", "model", "data", "utts", "beam", "lattice_beam", "max_active",
                "acoustic_scale"):  # fmt: skip
        if getattr(args, opt) is not None:
            passthrough += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    rows = []
    for name in args.decoders.split(","):
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        t = time.time()
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *passthrough, "--worker", name],
            capture_output=True, text=True, env=env, cwd=cwd,
        )  # fmt: skip
        if out.returncode != 0:
            print(out.stderr[-3000:])
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.time() - t
        rows.append(row)
    what = (
        f"{args.graph} / {args.model} / {args.data}"
        if own
        else f"Kaldi's AN4 {args.system} (kaldi_reference)"
    )
    print(f"decoder bench: {what}; max_active {args.max_active}, beam {args.beam}, "
          f"lattice_beam {args.lattice_beam}, acoustic_scale {args.acoustic_scale}")  # fmt: skip
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, one thread per decoder"
    )
    print(f"{'decoder':<34} {'utts':>5} {'frames':>7} {'CPU s':>7} {'loop s':>7} {'ms/frame':>8} "
          f"{'RSS MB':>7} {'lat arcs':>9}  WER (best LMWT_WIP)")  # fmt: skip
    names = {"new": "pykaldi2 LatticeFasterDecoder", "old": "old LatticeSimpleDecoder path"}
    for r in rows:
        w = f"{r['wer']['best']} {r['wer']['lmwt_wip']}" if r["wer"] else "-"
        print(f"{names[r['decoder']]:<34} {r['utts']:>5} {r['frames']:>7} {r['cpu_s']:>7.2f} "
              f"{r['loop_cpu_s']:>7.2f} {1000 * r['loop_cpu_s'] / r['frames']:>8.3f} "
              f"{r['peak_rss_mb']:>7.1f} {r['lattice_arcs']:>9}  {w}")  # fmt: skip
    if not own:
        k = kaldi_numbers(args.system)
        print(f"{'Kaldi gmm-latgen-faster (recorded)':<34} {'130':>5} {'35440':>7} "
              f"{k['decode_sh_cpu_s']:>7.2f} {k['latgen_wall_s']:>7.2f} "
              f"{1000 * k['latgen_wall_s'] / 35440:>8.3f} {k['decode_sh_peak_rss_mb']:>7.1f} "
              f"{'-':>9}  {k['best_wer']}")  # fmt: skip
        print(
            "  (Kaldi: CPU s = user+sys of all of decode.sh incl. scoring; loop s = "
            "gmm-latgen-faster's own wall time; RSS = decode.sh's largest process)"
        )
    if len(rows) == 2 and rows[0]["loop_cpu_s"] > 0:
        new, old = rows
        print(
            f"new/old: decoding CPU x{new['loop_cpu_s'] / old['loop_cpu_s']:.2f}, "
            f"peak RSS x{new['peak_rss_mb'] / old['peak_rss_mb']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
