"""``pykaldi2 simulate``: write a simulated (noisy, reverberant, perturbed) copy of a data dir."""

from __future__ import annotations

import argparse
import dataclasses

EXAMPLE = """\
example sim.yaml (every section optional; ranges are [min, max], drawn per utterance):
  seed: 0
  reverb: {enable: true, t60: [0.3, 0.8], room_length: [4, 8]}
  noise:  {enable: true, snr_db: [0, 15], noise_dir: data/noise}   # no dir: coloured noise
  speed:  {enable: false}
  volume: {enable: false}
"""


def _simulate(args: argparse.Namespace) -> int:
    from pykaldi2.simulation.config import SimulationConfig
    from pykaldi2.simulation.dump import simulate_data_dir

    config = SimulationConfig.from_yaml(args.config)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    d = simulate_data_dir(args.data, args.out, config, epoch=args.epoch, target_sr=args.sample_rate)
    print(f"{args.out}: {len(d)} simulated utterance(s)")
    return 0


def _perturb_speed(args: argparse.Namespace) -> int:
    from pykaldi2.simulation.dump import perturb_data_dir_speed

    d = perturb_data_dir_speed(args.data, args.out, tuple(args.factors))
    print(f"{args.out}: {len(d)} utterances at speeds {' '.join(map(str, args.factors))}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perturb-data-dir-speed",
        help="speed-perturbed copies of a data dir (utils/data/perturb_data_dir_speed_3way.sh)",
        description="Write OUTDIR with DATADIR itself (speed 1.0, unchanged) and a copy per "
        "other factor: each recording played that much faster (duration / factor, pitch x "
        "factor, as `sox speed`) into OUTDIR/wav/, utterance, recording and speaker ids "
        "prefixed sp<factor>- (Kaldi's names), segments and utt2dur scaled, utt2uniq naming "
        "each copy's source. Compute its features and align it (align-si) like any data dir; "
        "every Kaldi chain recipe trains on the 0.9/1.0/1.1 copies.",
    )
    p.add_argument("data", metavar="DATADIR", help="input Kaldi data dir")
    p.add_argument("out", metavar="OUTDIR", help="output data dir (replaced if it exists)")
    p.add_argument(
        "--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1],
        help="speed factors (default: 0.9 1.0 1.1)",
    )  # fmt: skip
    p.set_defaults(func=_perturb_speed)

    p = sub.add_parser(
        "simulate",
        help="write a simulated copy of a data dir (noise at an SNR, reverberation, speed/volume)",
        description="Simulate every utterance of DATADIR as configured in --config and write\n"
        "OUTDIR: wav/<utt>.wav, wav.scp, text, utt2spk, spk2utt, utt2dur, sim_config.yaml and\n"
        "sim_info.jsonl (the SNR, T60, room, offsets, speed and shift applied to each\n"
        "utterance). The same seed gives the same output; OUTDIR appears atomically.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATADIR", help="input Kaldi data dir")
    p.add_argument("out", metavar="OUTDIR", help="output data dir (replaced if it exists)")
    p.add_argument("--config", required=True, help="simulation config YAML (see below)")
    p.add_argument("--seed", type=int, default=None, help="override the config's base seed")
    p.add_argument(
        "--epoch", type=int, default=0, help="epoch number in the per-utterance seed (default 0)"
    )
    p.add_argument(
        "--sample-rate", type=int, default=None, help="resample the input to this rate first"
    )
    p.set_defaults(func=_simulate)
