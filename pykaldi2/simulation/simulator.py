"""The on-the-fly simulation chain and its reproducible per-utterance seeding.

Chain, in this order (each stage only when enabled and its ``prob`` draw succeeds):

1. speed perturbation (changes the length; map targets with :func:`~.perturb.rescale_ali`);
2. reverberation of the speech (image-method room or measured RIR), direct path compensated:
   ``info["shift"]`` samples were cut from the start so the direct sound stays in place;
3. additive noise (noise dir / babble / coloured), reverberated with the RIR of a second
   source position in the same room, scaled to an SNR drawn from the range against the speech
   *as it is in the mix* (see :mod:`.noise` for the exact definition);
4. volume perturbation of the mix (SNR unchanged).

SpecAugment works on features, not samples: call :func:`~.specaug.spec_augment` with
``config.specaug`` after feature extraction.

**Reproducibility.** Every random choice comes from one ``numpy.random.Generator`` per
utterance, built from ``SeedSequence([seed, epoch, worker_id, utt_index])``
(:func:`utterance_rng`). Inside, each stage draws from its own child stream seeded from it, so
switching a stage on or off does not change what the other stages draw. The same
(seed, epoch, worker id, utterance index) always gives the same output; another epoch gives
another simulation of the same utterance. With a PyTorch DataLoader:

* map-style dataset (recommended): in ``__getitem__(i)`` use ``sim.rng(epoch, i)``
  (worker_id 0): the result does not depend on how many workers there are or which worker
  loads item ``i``. The training loop sets ``dataset.epoch`` before each epoch (use
  ``persistent_workers=False``, or put the epoch into the sampler's indices, since persistent
  workers keep a copy of the dataset from when they started);
* iterable dataset: ``wi = torch.utils.data.get_worker_info()`` and
  ``sim.rng(epoch, k, worker_id=wi.id)`` for the k-th item of that worker;
* ``worker_init_fn=seed_worker`` additionally seeds numpy's global and ``random``'s generators
  per worker, for third-party code that uses them (the chain itself never does).

    >>> sim = Simulator(SimulationConfig.from_yaml("conf/sim.yaml"))
    >>> y, info = sim(x, 16000, sim.rng(epoch=3, utt_index=17))
    >>> info["snr_db"], info["reverb"]["t60"], info["shift"], info["speed"]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pykaldi2.simulation.config import SimulationConfig
from pykaldi2.simulation.noise import NoiseMaker, scale_to_snr
from pykaldi2.simulation.perturb import speed_perturb, volume_perturb
from pykaldi2.simulation.reverb import Reverberator, reverberate
from pykaldi2.utils.errors import DataError


def utterance_rng(
    base_seed: int, epoch: int = 0, worker_id: int = 0, utt_index: int = 0
) -> np.random.Generator:
    """The generator of one utterance: PCG64 seeded by SeedSequence([seed, epoch, worker, utt])."""
    key = [int(base_seed), int(epoch), int(worker_id), int(utt_index)]
    if min(key) < 0:
        raise DataError(f"seed, epoch, worker id and utterance index must be >= 0, got {key}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: seed numpy's global and ``random``'s RNGs
    from the per-worker torch seed (base seed + worker id, set by the DataLoader)."""
    import random

    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class SimResult:
    """Output of :meth:`Simulator.simulate`; all signals (n_out,) float32.

    ``speech`` and ``noise`` are the two components as they are in ``samples`` (after volume
    perturbation), so ``samples == speech + noise`` (noise is zeros when none was added).
    """

    samples: np.ndarray
    speech: np.ndarray
    noise: np.ndarray
    info: dict


class Simulator:
    """``sim(samples, sr, rng) -> (samples, info)``: the chain configured by ``config``.

    Pickles without its opened data dirs, so it can be handed to DataLoader workers.
    """

    def __init__(self, config: SimulationConfig | None = None) -> None:
        self.config = config or SimulationConfig()
        self._stages: dict[int, tuple[NoiseMaker, Reverberator]] = {}

    def rng(self, epoch: int = 0, utt_index: int = 0, worker_id: int = 0) -> np.random.Generator:
        """:func:`utterance_rng` with this config's base seed."""
        return utterance_rng(self.config.seed, epoch, worker_id, utt_index)

    def _for_rate(self, sr: int) -> tuple[NoiseMaker, Reverberator]:
        if sr not in self._stages:
            self._stages[sr] = (
                NoiseMaker(self.config.noise, sr),
                Reverberator(self.config.reverb, sr),
            )
        return self._stages[sr]

    def __call__(self, samples: np.ndarray, sr: int, rng: np.random.Generator):
        res = self.simulate(samples, sr, rng)
        return res.samples, res.info

    def simulate(self, samples: np.ndarray, sr: int, rng: np.random.Generator) -> SimResult:
        """Run the chain on (n,) ``samples`` at rate ``sr``; see the module docstring."""
        x = np.asarray(samples, np.float32)
        if x.ndim != 1:
            raise DataError(f"expected mono samples (n,), got shape {x.shape}")
        cfg = self.config
        noise_maker, reverberator = self._for_rate(int(sr))
        # One child stream per stage (seeded from rng; Generator.spawn needs numpy >= 1.25).
        speed_rng, reverb_rng, noise_rng, volume_rng = (
            np.random.default_rng(int(s)) for s in rng.integers(2**63, size=4)
        )
        info: dict = {
            "num_samples_in": len(x),
            "speed": 1.0,
            "shift": 0,
            "reverb": None,
            "snr_db": None,
            "noise": None,
            "gain_db": None,
        }

        if cfg.speed.enable and speed_rng.random() < cfg.speed.prob:
            info["speed"] = float(
                cfg.speed.factors[int(speed_rng.integers(len(cfg.speed.factors)))]
            )
            x = speed_perturb(x, info["speed"])

        speech, noise_rir = x, None
        if cfg.reverb.enable and reverb_rng.random() < cfg.reverb.prob:
            speech_rir, noise_rir, shift, info["reverb"] = reverberator.draw(reverb_rng)
            speech = reverberate(x, speech_rir, shift)
            info["shift"] = int(shift)

        noise = np.zeros_like(speech)
        if cfg.noise.enable and noise_rng.random() < cfg.noise.prob and len(speech):
            raw, info["noise"] = noise_maker.draw(len(speech), noise_rng)
            if noise_rir is not None and cfg.noise.reverberate:
                raw = reverberate(raw, noise_rir, info["shift"])
            snr = float(noise_rng.uniform(*cfg.noise.snr_db))
            noise = scale_to_snr(
                speech, raw, snr, sr, cfg.noise.snr_reference, cfg.noise.vad_floor_db
            )
            info["snr_db"] = snr

        if cfg.volume.enable and volume_rng.random() < cfg.volume.prob:
            info["gain_db"] = float(volume_rng.uniform(*cfg.volume.gain_db))
            speech = volume_perturb(speech, info["gain_db"])
            noise = volume_perturb(noise, info["gain_db"])
        info["num_samples_out"] = len(speech)
        return SimResult(samples=speech + noise, speech=speech, noise=noise, info=info)
