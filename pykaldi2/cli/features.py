"""``pykaldi2 compute-feats`` and ``pykaldi2 compute-cmvn`` (steps/make_fbank.sh, compute_cmvn_stats.sh)."""

from __future__ import annotations

import argparse
import time

from pykaldi2.cli.job_args import add_cmd_arg


def _feature_config(args):
    """defaults < --config file (YAML or Kaldi .conf) < Kaldi-style flags on the command line."""
    from pykaldi2.features.extractors import config_class, parse_kaldi_options, read_kaldi_conf
    from pykaldi2.utils.config import read_yaml_mapping

    values: dict = {}
    feat_type = None
    if args.config:
        if args.config.endswith(".conf"):
            values.update(read_kaldi_conf(args.config))
        else:
            data = read_yaml_mapping(args.config, what="feature config")
            feat_type = data.pop("feat_type", None)
            values.update(
                parse_kaldi_options({k: _yaml_str(v) for k, v in data.items()}, args.config)
            )
    flags = {k: v for k, v in (args.option or {}).items()}
    values.update(parse_kaldi_options(flags, "command line"))
    feat_type = args.feat_type or feat_type or "fbank"
    return config_class(feat_type).from_dict(values)


def _yaml_str(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


class _KaldiOption(argparse.Action):
    """Collect ``--num-mel-bins 80`` style flags into ``args.option`` as strings."""

    def __call__(self, parser, namespace, values, option_string=None):
        opts = dict(getattr(namespace, "option", None) or {})
        opts[option_string.lstrip("-")] = values
        namespace.option = opts


def _compute_feats(args) -> int:
    from pykaldi2.features.compute import compute_feats
    from pykaldi2.utils.log import get_logger

    config = _feature_config(args)
    t0 = time.time()
    reader = compute_feats(
        args.datadir,
        args.featdir,
        config,
        nj=args.nj,
        cmd=args.cmd,
        fmt=args.format,
        compression=args.compression,
        resample=args.resample,
        overwrite=args.overwrite,
    )
    get_logger("pykaldi2.compute-feats").info(
        "%d utterances, dim %d, %s features in %s (%.1f s)",
        len(reader),
        reader.dim,
        config.feat_type,
        args.featdir,
        time.time() - t0,
    )
    return 0


def _compute_cmvn(args) -> int:
    from pykaldi2.features.compute import compute_cmvn

    stats = compute_cmvn(args.datadir, args.cmvndir)
    print(f"cmvn stats for {len(stats)} speakers -> {args.datadir}/cmvn.scp")
    return 0


def _copy_feats(args) -> int:
    from pykaldi2.features.storage import copy_feats

    out = copy_feats(args.input, args.output, compression=args.compression)
    print(f"copied {len(out)} utterances (dim {out.dim}) to {args.output}")
    return 0


def _add_compression(p) -> None:
    p.add_argument(
        "--compression",
        choices=["gzip", "lzf", "none"],
        default="gzip",
        help="HDF5 compression (gzip level 1 + shuffle: portable; lzf: faster to read)",
    )


def register(subparsers) -> None:
    from pykaldi2.features.extractors import kaldi_option_help, kaldi_option_names

    p = subparsers.add_parser(
        "compute-feats",
        help="fbank/MFCC features of a data dir into HDF5 or Kaldi ark (make_fbank.sh)",
        description="Compute Kaldi-compatible fbank or MFCC features (kaldi-native-fbank) for "
        "every utterance of DATADIR, in --nj parallel jobs each writing its own archive in "
        "FEATDIR, then write DATADIR/feats.scp and utt2num_frames. Re-running resumes: jobs whose "
        "archive is complete are skipped. Feature options use Kaldi's names (e.g. "
        "--num-mel-bins 80 --snip-edges false); defaults are Kaldi's except dither 0 and 80 mel "
        "bins for fbank.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("datadir", help="Kaldi data dir (wav.scp, utt2spk, [segments])")
    p.add_argument("featdir", help="directory for the feature archives")
    p.add_argument(
        "--feat-type",
        choices=["fbank", "mfcc"],
        default=None,
        help="feature type (default: fbank, or the --config file's feat_type)",
    )
    p.add_argument(
        "--config", help="feature options: YAML mapping, or a Kaldi .conf (--name=value lines)"
    )
    p.add_argument("--nj", type=int, default=1, help="number of parallel jobs (processes)")
    add_cmd_arg(p)
    p.add_argument("--format", choices=["hdf5", "ark"], default="hdf5", help="archive format")
    _add_compression(p)
    p.add_argument(
        "--resample",
        action="store_true",
        help="resample audio to --sample-frequency instead of failing on a rate mismatch",
    )
    p.add_argument("--overwrite", action="store_true", help="recompute finished jobs too")
    kaldi = p.add_argument_group("feature options (Kaldi names; see compute-fbank-feats --help)")
    for flag, field in kaldi_option_names().items():
        kaldi.add_argument(
            f"--{flag}",
            action=_KaldiOption,
            default=argparse.SUPPRESS,
            metavar=field.upper(),
            help=kaldi_option_help(flag),
        )
    p.set_defaults(func=_compute_feats, option=None)

    c = subparsers.add_parser(
        "compute-cmvn",
        help="per-speaker CMVN stats of a data dir's features (compute_cmvn_stats.sh)",
        description="Accumulate per-speaker CMVN statistics (Kaldi's 2 x (dim+1) layout) of "
        "DATADIR/feats.scp into CMVNDIR/cmvn_<name>.ark and write DATADIR/cmvn.scp.",
    )
    c.add_argument("datadir", help="data dir with feats.scp and utt2spk")
    c.add_argument("cmvndir", nargs="?", help="where cmvn_<name>.ark goes (default: the featdir)")
    c.set_defaults(func=_compute_cmvn)

    k = subparsers.add_parser(
        "copy-feats",
        help="convert features between HDF5 and Kaldi ark/scp (copy-feats)",
        description="Copy the features of INPUT (a data dir, a .scp, an .h5 or an .ark) into "
        "OUTPUT: an HDF5 archive (.h5/.hdf5) or a Kaldi ark (.ark, with a .scp written beside it "
        "that Kaldi's tools read).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    k.add_argument("input", help="data dir, .scp, .h5 or .ark")
    k.add_argument("output", help="output .h5/.hdf5 or .ark")
    _add_compression(k)
    k.set_defaults(func=_copy_feats)
