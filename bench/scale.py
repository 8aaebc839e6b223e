"""Cost per hour of audio as the corpus grows (#19): corpora of 1, 4 and 16 hours made from real
speech, every stage run on each, CPU / wall seconds per hour and peak RSS per stage and size,
the growth exponent of CPU time in corpus size, and the nj=2 speedup.

The corpora: the training utterances of speechocean762 (``/work/corpora/speechocean762`` or
``--source-dir``, 2.9 h, 125 speakers) or, without it, AN4's (``../shared/data/an4``, 0.7 h),
copied as often as the size needs; every copy of an utterance (the first one too) is speed
perturbed (0.9 .. 1.1), volume perturbed (-6 .. +6 dB) and has white noise added at 15 .. 30 dB
SNR, each drawn from a generator seeded by (copy, utterance): no two copies are the same audio.
Copy k of speaker S is speaker ``cK-S``. The source's utterances are taken in a fixed
pseudo-random order (by the SHA-1 of the id), not sorted: so every size samples all speakers
alike. (Taken in sorted order, the 1 h corpus held the first third of the speakers only, and its
decode subset cost 70.9 CPU s per hour against the 4 h corpus's 91 with the same model and
graph: the sizes differed in who was speaking, not in how much.) The lang dir (the corpus
lexicon, a bigram on the source transcripts) is shared by all sizes.

Stages (each one command or one Python step in a fresh process, measured by a wrapper that
waits for it: CPU = user + system of it and all its children, peak RSS = the largest
``ru_maxrss`` among them, i.e. the largest single process, a job or the parent):

    features   compute-feats MFCC (--nj, ark) + compute-cmvn
    mono       train-mono (--nj): a short monophone schedule, all utterances
    tri1       align-si mono + train-deltas (--nj)
    align      align-si tri1 (--nj)
    gmm-acc    one gmm-acc-stats-ali pass of tri1 over its alignments (hmm.jobs in --nj jobs)
    decode     decode --data (--nj, beam 11, max-active 3000, lattice beam 5) of every 10th
               utterance (per hour of *decoded* audio); the graph (mkgraph) is not timed
    latgen     denominator lattices of the same utterances from tri1's log-likelihoods, in
               hmm.latgen's pool of --nj workers, in train-se's batches (its
               BucketBatchSampler: 8 utterances of similar length, at most 8,000 padded
               frames) and with its prefetch (batch k+1 submitted before batch k's lattices
               are taken: 2 batches in flight). The log-likelihoods are computed
               before the stage (GMM, written to an ark) and read from it: in train-se they are
               the network's forward in the trainer's process, which --nj does not divide.
               (Computed inside the stage, by its one parent, they made the nj=1 run keep 1.5
               cores busy, which capped the nj=2 speedup near 1.3 on 2 cores.)
    chain-egs  what train-chain runs for its data: chain-get-egs (--nj jobs; stage 0 = phone
               LM + den.fst + split, the jobs' supervision and chunks, the merges) into a
               fresh egs dir, chunk widths 140,100,160 and the context of a 1j TDNN-F (the
               model's size does not matter to the egs: a small one with 1j's strides); peak
               RSS of stage 0 (the parent) and of the largest job / merge are recorded apart
    ce-epoch   train-ce, one epoch of a small TDNN-F on the tri1 alignments (MFCC input)

``--quick``: sizes 0.25 and 1 h, stages features, mono, align, decode (align and decode with the
mono model), nj=2 speedup of features, align and decode. The speedup (wall time nj=1 / nj=2,
measured on the largest size unless ``--speedup-size`` says otherwise) is for features,
gmm-acc, align, decode and latgen. The growth exponent of a stage is the slope of log(CPU
seconds) over log(hours) between the smallest and the largest size (least squares over all
sizes); RSS ratio = peak RSS largest / smallest.
Results go to ``WORK/results.json`` after every stage (a killed run keeps what finished), a
table to stdout; the last line reads ``scale: exponent E, rss ratio R, nj2 speedup S`` (the worst
stage of each: highest exponent, highest ratio, lowest speedup).

    python bench/scale.py [--sizes 1,4,16] [--quick] [--stages features,mono,...] [--nj 2]
        [--work /tmp/pykaldi2_scale] [--source-dir DIR] [--tag TAG] [--speedup-size H]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, cpu_name  # noqa: E402

ALL_STAGES = (
    "features", "mono", "tri1", "align", "gmm-acc", "decode", "latgen", "chain-egs", "ce-epoch",
)  # fmt: skip
QUICK_STAGES = ("features", "mono", "align", "decode")
SPEEDUP_STAGES = ("features", "gmm-acc", "align", "decode", "latgen")
#: latgen's batches: train-se's BucketBatchSampler with batch_size 8 and this frame budget
#: (N * longest <= 8,000 frames), so what is in flight does not follow the longest utterances
LATGEN_MAX_FRAMES = 8000
DECODE_EVERY = 10  # decode / latgen: every 10th utterance of the corpus
#: Measures a command: runs it, waits, prints the rusage of everything it waited for.
WRAPPER = """
import json, resource, subprocess, sys, time
t0 = time.time()
rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], "a"), stderr=subprocess.STDOUT)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": time.time() - t0, "cpu": r.ru_utime + r.ru_stime,
                  "rss_mb": r.ru_maxrss / 1024}))
"""
PYKALDI2 = [sys.executable, "-m", "pykaldi2"]


# ---------------------------------------------------------------------------------------------
# The corpora
# ---------------------------------------------------------------------------------------------
def prepare_source(work: Path, source_dir: Path | None) -> tuple[Path, Path, str]:
    """(source train data dir, lang_test dir, corpus name), made once under ``work/src``."""
    src = work / "src"
    so = source_dir or Path("/work/corpora/speechocean762")
    name = "speechocean762" if (so / "WAVE").is_dir() else "an4"
    if (src / "done").is_file():
        return src / "data" / "train", src / "lang_test", (src / "done").read_text().strip()
    src.mkdir(parents=True, exist_ok=True)
    if name == "speechocean762":
        run([*PYKALDI2, "prepare", "speechocean762", "--corpus-dir", str(so), str(src / "data")])
        dict_cmd = ["lexicon", str(so / "resource" / "lexicon.txt")]
    else:
        an4 = Path(os.environ.get("PYKALDI2_SHARED_DATA", REPO.parent / "shared" / "data"))
        run([*PYKALDI2, "prepare", "an4", "--corpus-dir", str(an4 / "an4"), str(src / "data")])
        dict_cmd = ["an4", str(an4 / "an4")]
    run([*PYKALDI2, "prepare-dict", *dict_cmd, str(src / "dict")])
    run([*PYKALDI2, "prepare-lang", str(src / "dict"), "<UNK>", str(src / "lang")])
    run([*PYKALDI2, "train-lm", "--order", "2", "--words", str(src / "lang" / "words.txt"),
         "--skip-first-field", str(src / "data" / "train" / "text"), str(src / "lm.arpa")])  # fmt: skip
    run([*PYKALDI2, "make-g", str(src / "lang"), str(src / "lm.arpa"), str(src / "lang_test")])
    (src / "done").write_text(name + "\n")
    return src / "data" / "train", src / "lang_test", name


def build_corpus(source: Path, hours: float, out: Path) -> float:
    """A data dir of about ``hours`` of perturbed copies of ``source``'s utterances (module
    doc) at ``out``; returns its hours. Reused when it exists."""
    import soundfile as sf

    from pykaldi2.data.audio import load_utterance
    from pykaldi2.data.datadir import read_data_dir
    from pykaldi2.simulation.perturb import speed_perturb, volume_perturb

    if (out / "hours").is_file():
        return float((out / "hours").read_text())
    d = read_data_dir(source)
    utts = sorted(d.utt2spk, key=lambda u: hashlib.sha1(u.encode()).digest())  # module doc
    wav_dir = out.parent / "wav"  # (fix-data-dir rewrites the data dir whole)
    wav_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    target, total = hours * 3600.0, 0.0
    wav_scp, text, utt2spk = [], [], []
    k = 0
    while total < target:
        for u in utts:
            if total >= target:
                break
            seed = int(hashlib.sha1(f"{k}/{u}".encode()).hexdigest()[:8], 16)
            rng = np.random.default_rng(seed)
            x, sr = load_utterance(d, u)
            y = speed_perturb(np.asarray(x, np.float32), float(rng.uniform(0.9, 1.1)))
            y = volume_perturb(y, float(rng.uniform(-6, 6)))
            snr = float(rng.uniform(15, 30))
            p = float(np.mean(y**2)) + 1e-12
            y = y + rng.normal(0, math.sqrt(p / 10 ** (snr / 10)), len(y)).astype(np.float32)
            if np.abs(y).max() > 0.99:
                y *= 0.99 / np.abs(y).max()
            spk = f"c{k:02d}-{d.utt2spk[u]}"
            uid = f"{spk}-{u}"
            path = wav_dir / f"{uid}.wav"
            sf.write(path, y, sr, subtype="PCM_16")
            wav_scp.append(f"{uid} {path}\n")
            text.append(f"{uid} {d.text[u]}\n")
            utt2spk.append(f"{uid} {spk}\n")
            total += len(y) / sr
        k += 1
    for name, lines in (("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk)):
        (out / name).write_text("".join(sorted(lines)))
    run([*PYKALDI2, "fix-data-dir", str(out)])
    (out / "hours").write_text(f"{total / 3600:.4f}\n")
    return total / 3600


def subset_every(data: Path, n: int, out: Path) -> float:
    """Every ``n``-th utterance of ``data`` (with its features) at ``out``; its hours."""
    from pykaldi2.data.datadir import read_data_dir, write_data_dir

    d = read_data_dir(data)
    utts = sorted(d.utt2spk)[::n]
    write_data_dir(d.select(utts), out)
    frames = dict(line.split() for line in (data / "utt2num_frames").read_text().splitlines())
    return sum(int(frames[u]) for u in utts if u in frames) / 100 / 3600


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
def run(cmd: list[str], log: Path | None = None) -> None:
    """Run a set-up command (not measured); its output to ``log`` or dropped."""
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYKALDI2_NO_PROGRESS": "1"}
    if subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env) != 0:
        raise SystemExit(f"scale: failed: {' '.join(cmd)}" + (f" (see {log})" if log else ""))


def measure(cmds: list[list[str]], log: Path) -> dict:
    """Run ``cmds`` one after the other, each under :data:`WRAPPER`; summed CPU and wall, the
    largest peak RSS."""
    tot = {"cpu": 0.0, "wall": 0.0, "rss_mb": 0.0}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYKALDI2_NO_PROGRESS": "1"}
    for cmd in cmds:
        with open(log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
        p = subprocess.run(
            [sys.executable, "-c", WRAPPER, str(log), *cmd], capture_output=True, text=True,
            env=env,
        )  # fmt: skip
        r = json.loads(p.stdout.strip().splitlines()[-1])
        if r["rc"] != 0:
            raise SystemExit(f"scale: failed (exit {r['rc']}): {' '.join(cmd)}; see {log}")
        tot["cpu"] += r["cpu"]
        tot["wall"] += r["wall"]
        tot["rss_mb"] = max(tot["rss_mb"], r["rss_mb"])
    return tot


def py_step(code: str) -> list[str]:
    """A measured Python step (its own process)."""
    return [sys.executable, "-c", code]


MONO_YAML = "num_iters: {iters}\ntotgauss: 1000\nmax_iter_inc: {inc}\nrealign_iters: {realign}\n"
TRI_YAML = "num_leaves: 1000\ntot_gauss: 5000\nnum_iters: 8\nmax_iter_inc: 6\nrealign_iters: [4]\n"
CE_YAML = """train_data: [{data}]
ali_dir: [{ali}]
valid_fraction: 0.02
features: {{cmvn: speaker, norm_vars: false}}
model_type: tdnnf
model: {{hidden: 256, bottleneck: 64, time_strides: [1, 1, 1, 1], dropout: 0.1}}
chunk_size: 80
batch_size: 64
num_workers: 1
trainer: {{optimizer: adam, lr: 0.002, max_epochs: 1, checkpoint_every: 100000, log_every: 50}}
seed: 0
"""
CHAIN_YAML = """train_data: [{data}]
ali_dir: [{ali}]
valid_fraction: 0.02
features: {{cmvn: speaker, norm_vars: false}}
model_type: tdnnf
model: {{hidden: 64, bottleneck: 16, prefinal_dim: 16,
         time_strides: [1, 1, 1, 0, 3, 3, 3, 3, 3, 3, 3, 3]}}
frame_subsampling_factor: 3
phone_lm: {{ngram_order: 4, no_prune_ngram_order: 3, num_extra_lm_states: 2000}}
egs: {{chunk_widths: [140, 100, 160], frames_per_archive: 200000, min_archives: 2}}
trainer: {{max_epochs: 1}}
"""
GMM_ACC = """
import sys
from pathlib import Path
from pykaldi2.data.split import split_data
from pykaldi2.hmm.jobs import AccJob, acc_stats_job
from pykaldi2.hmm.model import GmmModel
from pykaldi2.hmm.streams import FeaturePipeline
from pykaldi2.utils.jobs import JobRunner
data, exp, ali, out, nj = sys.argv[1:6]
nj = int(nj)
pipe = FeaturePipeline.for_model(GmmModel.load(f"{exp}/final.mdl"))
alis = sorted(str(p) for p in Path(ali).glob("ali.*.gz"))
splits = split_data(data, nj)
jobs = [AccJob(f"{exp}/final.mdl", str(d), pipe, alis, f"{out}/acc.{j + 1}") for j, d in
        enumerate(splits)]
Path(out).mkdir(parents=True, exist_ok=True)
with JobRunner(nj) as run:
    run(acc_stats_job, jobs, log=f"{out}/log/acc.JOB.log")
"""
#: The log-likelihoods latgen is fed (written before it, not timed): tri1's GMM on the decode
#: subset, standing in for the network forward that train-se's trainer runs for its lattices.
LATGEN_LOGLIK = """
import sys
import kaldiio
from pykaldi2.decoding.batch import DataDirFeats
from pykaldi2.decoding.wfst import GmmScorer
from pykaldi2.hmm.model import GmmModel
from pykaldi2.data.datadir import read_data_dir
data, exp, out = sys.argv[1:4]
scorer = GmmScorer(GmmModel.load(f"{exp}/final.mdl").am)
utts = sorted(read_data_dir(data).utt2spk)
with kaldiio.WriteHelper(f"ark,scp:{out}.ark,{out}.scp.tmp") as w:
    for utt, x in DataDirFeats(f"{exp}/final.mdl", data, utts):
        w(utt, scorer(x))
"""
LATGEN = """
import sys
import kaldiio
import numpy as np
from pykaldi2.data.samplers import BucketBatchSampler
from pykaldi2.data.tables import read_table
from pykaldi2.hmm.latgen import LatticeGenConfig, LatticeGenerator
from pykaldi2.hmm.lattice_arrays import TransitionInfo
from pykaldi2.hmm.model import GmmModel
loglik, data, exp, graph, nj, max_frames = sys.argv[1:7]
model = GmmModel.load(f"{exp}/final.mdl")
info = TransitionInfo.from_trans_model(model.tm)
cfg = LatticeGenConfig(num_workers=int(nj), beam=11.0, lattice_beam=5.0, max_active=3000)
gen = LatticeGenerator(f"{graph}/HCLG.fst", info, cfg)
frames = read_table(f"{data}/utt2num_frames")  # the lengths train-se's dataset has
utts = sorted(frames)
lengths = [int(frames[u]) for u in utts]
table = kaldiio.load_scp(loglik)  # read an utterance at a time (seek + read)
def submit(b):
    # a batch as train-se's loader and network hand it: (N, longest, pdfs) padded + lengths
    n = [lengths[i] for i in b]
    ll = np.zeros((len(b), max(n), info.num_pdfs), np.float32)
    for k, i in enumerate(b):
        x = table[utts[i]]
        if x.shape != (n[k], info.num_pdfs):
            sys.exit(f"{loglik}: {utts[i]}'s log-likelihoods are {x.shape}, not "
                     f"utt2num_frames x pdfs = {(n[k], info.num_pdfs)}: rerun the step before")
        ll[k, : n[k]] = x
    return gen.submit([utts[i] for i in b], ll, n)
sampler = BucketBatchSampler(lengths, batch_size=8, max_frames=int(max_frames), seed=0)
done, prev = 0, None
for b in sampler:  # batch k+1 submitted before batch k's lattices are taken (LatticePrefetcher)
    handle = submit(b)
    if prev is not None:
        done += len(prev.get())
    prev = handle
if prev is not None:
    done += len(prev.get())
gen.close()
assert done == len(utts), (done, len(utts))
print(done, "lattices")
"""
CHAIN_EGS = """
import json, resource, sys
from pykaldi2.training.chain import TrainChainConfig
from pykaldi2.training.chain_get_egs import chain_get_egs
conf, egs, left, right, nj, out = sys.argv[1:7]
info = chain_get_egs(TrainChainConfig.load(conf), egs, int(left), int(right), nj=int(nj))
rss = lambda who: resource.getrusage(who).ru_maxrss / 1024
json.dump({"chunks": info.num_chunks, "archives": info.num_archives,
           "rss_mb_stage0": rss(resource.RUSAGE_SELF),
           "rss_mb_jobs": rss(resource.RUSAGE_CHILDREN)}, open(out, "w"))
print(info.num_chunks, "chunks in", info.num_archives, "archives")
"""


def stage_cmds(stage: str, s: dict, nj: int, quick: bool) -> list[list[str]]:
    """The commands of ``stage`` on size ``s`` (paths in it) with ``nj`` jobs."""
    data, lang, exp = s["data"], s["lang"], s["exp"]
    gmm = "mono" if quick else "tri1"
    # chain_context is set by before_stage("chain-egs"); the dict is built for every stage
    context = s.get("chain_context", [])
    cmds = {
        "features": [
            [*PYKALDI2, "compute-feats", "--feat-type", "mfcc", "--format", "ark", "--nj", str(nj),
             "--overwrite", str(data), f"{s['root']}/mfcc_nj{nj}"],
            [*PYKALDI2, "compute-cmvn", str(data), f"{s['root']}/mfcc_nj{nj}"],
        ],
        "mono": [[*PYKALDI2, "train-mono", "--nj", str(nj), "--config", s["mono_yaml"], str(data),
                  str(lang), f"{exp}/mono"]],
        "tri1": [
            [*PYKALDI2, "align-si", "--nj", str(nj), str(data), str(lang), f"{exp}/mono",
             f"{exp}/mono_ali"],
            [*PYKALDI2, "train-deltas", "--nj", str(nj), "--config", s["tri_yaml"], str(data),
             str(lang), f"{exp}/mono_ali", f"{exp}/tri1"],
        ],
        "align": [[*PYKALDI2, "align-si", "--nj", str(nj), str(data), str(lang), f"{exp}/{gmm}",
                   f"{exp}/{gmm}_ali_nj{nj}"]],
        "gmm-acc": [py_step(GMM_ACC) + [str(data), f"{exp}/tri1", f"{exp}/tri1_ali_nj2",
                                        f"{exp}/acc_nj{nj}", str(nj)]],
        "decode": [[*PYKALDI2, "decode", "--data", str(s["dec"]), "--nj", str(nj), "--beam", "11",
                    "--max-active", "3000", "--lattice-beam", "5", f"{exp}/{gmm}/graph",
                    f"{exp}/{gmm}/final.mdl", f"{exp}/{gmm}/decode_nj{nj}"]],
        "latgen": [py_step(LATGEN) + [f"{exp}/tri1/loglik_dec.scp", str(s["dec"]),
                                      f"{exp}/tri1", f"{exp}/tri1/graph", str(nj),
                                      str(LATGEN_MAX_FRAMES)]],
        "chain-egs": [py_step(CHAIN_EGS) + [s["chain_yaml"], s["chain_egs"], *context,
                                            str(nj), s["chain_egs"] + ".json"]],
        "ce-epoch": [[*PYKALDI2, "train-ce", "--config", s["ce_yaml"], f"{exp}/ce"]],
    }  # fmt: skip
    return cmds[stage]


def before_stage(stage: str, s: dict, quick: bool) -> None:
    """Unmeasured set-up a stage needs (the graph, the decode subset, configs)."""
    gmm = "mono" if quick else "tri1"
    exp = Path(s["exp"])
    if stage == "latgen":
        gmm = "tri1"
    if stage in ("decode", "latgen") and not (exp / gmm / "graph" / "HCLG.fst").is_file():
        run([*PYKALDI2, "mkgraph", str(s["lang"]), str(exp / gmm / "final.mdl"),
             str(exp / gmm / "graph")], s["log"])  # fmt: skip
    ll = exp / "tri1" / "loglik_dec"
    if stage == "latgen" and not (
        ll.with_suffix(".scp").is_file()
        and ll.with_suffix(".scp").stat().st_mtime > (exp / "tri1" / "final.mdl").stat().st_mtime
    ):
        run(py_step(LATGEN_LOGLIK) + [str(s["dec"]), str(exp / "tri1"), str(ll)], s["log"])
        os.replace(f"{ll}.scp.tmp", f"{ll}.scp")
    if stage == "ce-epoch" and (exp / "ce").exists():
        shutil.rmtree(exp / "ce")
    if stage == "chain-egs":
        from pykaldi2.training.chain import TrainChainConfig, chain_model_for

        model = chain_model_for(TrainChainConfig.load(s["chain_yaml"]))
        s["chain_context"] = [str(model.left_context), str(model.right_context)]
        if Path(s["chain_egs"]).exists():
            shutil.rmtree(s["chain_egs"])


def write_configs(s: dict, quick: bool) -> None:
    root = Path(s["root"])
    iters = (4, 2, "[1, 2]") if quick else (10, 8, "[1, 2, 3, 5, 7, 9]")
    (root / "mono.yaml").write_text(MONO_YAML.format(iters=iters[0], inc=iters[1],
                                                     realign=iters[2]))  # fmt: skip
    (root / "tri1.yaml").write_text(TRI_YAML)
    ali = f"{s['exp']}/tri1_ali_nj2"
    (root / "ce.yaml").write_text(CE_YAML.format(data=s["data"], ali=ali))
    (root / "chain.yaml").write_text(CHAIN_YAML.format(data=s["data"], ali=ali))
    s.update(mono_yaml=str(root / "mono.yaml"), tri_yaml=str(root / "tri1.yaml"),
             ce_yaml=str(root / "ce.yaml"), chain_yaml=str(root / "chain.yaml"))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
def exponent(hours: list[float], cpu: list[float]) -> float:
    """Least-squares slope of log(cpu) over log(hours)."""
    x, y = np.log(hours), np.log(np.maximum(cpu, 1e-6))
    return float(np.polyfit(x, y, 1)[0]) if len(set(hours)) > 1 else float("nan")


def summarize(res: dict) -> str:
    lines = []
    sizes = sorted(res["sizes"], key=float)
    lines.append(f"{'stage':10s} {'size h':>7s} {'hours':>6s} {'CPU s/h':>9s} {'wall s/h':>9s} "
                 f"{'peak RSS MB':>11s}")  # fmt: skip
    worst_e, worst_r = ("-", -math.inf), ("-", -math.inf)
    for stage in ALL_STAGES:
        rows = [(sz, res["sizes"][sz]["stages"][stage]) for sz in sizes
                if stage in res["sizes"][sz]["stages"]]  # fmt: skip
        for sz, r in rows:
            lines.append(f"{stage:10s} {sz:>7s} {r['hours']:6.3f} {r['cpu'] / r['hours']:9.1f} "
                         f"{r['wall'] / r['hours']:9.1f} {r['rss_mb']:11.0f}"
                         + (f"  (stage 0 {r['rss_mb_stage0']:.0f}, jobs {r['rss_mb_jobs']:.0f})"
                            if "rss_mb_stage0" in r else ""))  # fmt: skip
        if len(rows) > 1:
            e = exponent([r["hours"] for _, r in rows], [r["cpu"] for _, r in rows])
            ratio = rows[-1][1]["rss_mb"] / rows[0][1]["rss_mb"]
            lines.append(f"{stage:10s} growth exponent {e:.3f}, rss ratio {ratio:.2f} "
                         f"({rows[0][0]} -> {rows[-1][0]} h)")  # fmt: skip
            worst_e = max(worst_e, (stage, e), key=lambda t: t[1])
            worst_r = max(worst_r, (stage, ratio), key=lambda t: t[1])
    worst_s = ("-", math.inf)
    for stage, sp in res.get("speedup", {}).items():
        lines.append(f"{stage:10s} nj=2 speedup {sp['speedup']:.2f} (wall {sp['wall1']:.1f} s "
                     f"-> {sp['wall2']:.1f} s, {sp['size']} h)")  # fmt: skip
        worst_s = min(worst_s, (stage, sp["speedup"]), key=lambda t: t[1])
    fmt = lambda t, d: f"{t[1]:.{d}f} ({t[0]})" if math.isfinite(t[1]) else "n/a"  # noqa: E731
    lines.append(f"scale: exponent {fmt(worst_e, 3)}, rss ratio {fmt(worst_r, 2)}, "
                 f"nj2 speedup {fmt(worst_s, 2)}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,4,16", help="corpus sizes in hours (default 1,4,16)")
    ap.add_argument("--quick", action="store_true", help="sizes 0.25,1; 4 stages")
    ap.add_argument("--stages", help="comma-separated subset of " + ",".join(ALL_STAGES))
    ap.add_argument("--nj", type=int, default=2, help="jobs per stage (default 2)")
    ap.add_argument("--no-speedup", action="store_true", help="skip the nj=1 reruns")
    ap.add_argument("--speedup-size", help="the size (hours, one of --sizes) the nj=1 reruns "
                    "are made on (default the largest: start-up is not divided by the jobs, "
                    "and on the 1 h size a stage can be a second of wall time)")  # fmt: skip
    ap.add_argument("--work", default="/tmp/pykaldi2_scale", help="work dir (corpora reused)")
    ap.add_argument("--source-dir", type=Path, help="speechocean762 folder (default: /work/...)")
    ap.add_argument("--tag", default="", help="results_TAG.json, exp/chain_egs_TAG (runs of "
                    "two versions of the code on the same corpora)")  # fmt: skip
    args = ap.parse_args()
    sizes = ["0.25", "1"] if args.quick else args.sizes.split(",")
    speedup_size = args.speedup_size or max(sizes, key=float)
    if speedup_size not in sizes:
        ap.error(f"--speedup-size {speedup_size} is not one of --sizes {','.join(sizes)}")
    stages = args.stages.split(",") if args.stages else list(QUICK_STAGES if args.quick
                                                             else ALL_STAGES)  # fmt: skip
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_json = work / (f"results{'_quick' if args.quick else ''}"
                       f"{args.tag and '_' + args.tag}.json")  # fmt: skip
    res = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs", "nj": args.nj, "sizes": {},
           "speedup": {}, "stages": stages}  # fmt: skip
    t_start = time.time()
    source, lang, corpus = prepare_source(work, args.source_dir)
    res["corpus"] = corpus
    for sz in sizes:
        root = work / f"{corpus}_{sz}h"
        root.mkdir(exist_ok=True)
        data = root / "data"
        hours = build_corpus(source, float(sz), data)
        exp = root / ("exp_quick" if args.quick else "exp")
        s = {"root": str(root), "data": data, "lang": lang, "exp": str(exp),
             "log": root / "scale.log", "dec": root / "data_dec",
             "chain_egs": str(exp / f"chain_egs{args.tag and '_' + args.tag}")}  # fmt: skip
        write_configs(s, args.quick)
        res["sizes"][sz] = {"hours": hours, "stages": {}}
        for stage in stages:
            if stage in ("decode", "latgen") and "dec_hours" not in s:
                s["dec_hours"] = subset_every(data, DECODE_EVERY, s["dec"])
            before_stage(stage, s, args.quick)
            r = measure(stage_cmds(stage, s, args.nj, args.quick), s["log"])
            if stage == "chain-egs":  # which process peaked: stage 0 or a job / merge
                r.update(json.loads(Path(s["chain_egs"] + ".json").read_text()))
            r["hours"] = s["dec_hours"] if stage in ("decode", "latgen") else hours
            res["sizes"][sz]["stages"][stage] = r
            print(f"[{time.time() - t_start:6.0f} s] {sz} h {stage}: {r['cpu']:.1f} s CPU, "
                  f"{r['wall']:.1f} s wall, {r['rss_mb']:.0f} MB", flush=True)  # fmt: skip
            if (
                stage in SPEEDUP_STAGES
                and sz == speedup_size
                and not args.no_speedup
                and args.nj == 2
            ):
                before_stage(stage, s, args.quick)
                r1 = measure(stage_cmds(stage, s, 1, args.quick), s["log"])
                res["speedup"][stage] = {"size": sz, "wall1": r1["wall"], "wall2": r["wall"],
                                         "cpu1": r1["cpu"], "cpu2": r["cpu"],
                                         "speedup": r1["wall"] / r["wall"]}  # fmt: skip
                print(f"[{time.time() - t_start:6.0f} s] {sz} h {stage} nj=1: {r1['wall']:.1f} "
                      f"s wall -> speedup {r1['wall'] / r['wall']:.2f}", flush=True)  # fmt: skip
            out_json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    res["total_wall"] = time.time() - t_start
    out_json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"{corpus} copies, nj={args.nj}, {res['machine']}; {res['total_wall']:.0f} s in all")
    print(summarize(res))


if __name__ == "__main__":
    main()
