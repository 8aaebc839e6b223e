"""On-the-fly data simulation: speed/volume perturbation, reverberation, noise, SpecAugment.

    >>> from pykaldi2.simulation import SimulationConfig, Simulator
    >>> sim = Simulator(SimulationConfig.from_yaml("conf/sim.yaml"))
    >>> y, info = sim(x, 16000, sim.rng(epoch, utt_index))

Modules: :mod:`.config` (the typed config), :mod:`.simulator` (the chain and its seeding),
:mod:`.noise`, :mod:`.rir` (image-source RIRs, Schroeder T60), :mod:`.reverb`,
:mod:`.perturb`, :mod:`.specaug`, :mod:`.dump` (wav files, simulated data dirs),
:mod:`.dataset` (simulated training datasets; imports torch, so not re-exported here).
"""

from pykaldi2.simulation.config import (
    NoiseConfig,
    ReverbConfig,
    SimulationConfig,
    SpecAugConfig,
    SpeedConfig,
    VolumeConfig,
)
from pykaldi2.simulation.dump import dump_wav, simulate_data_dir
from pykaldi2.simulation.perturb import rescale_ali, speed_perturb, volume_perturb
from pykaldi2.simulation.simulator import SimResult, Simulator, seed_worker, utterance_rng
from pykaldi2.simulation.specaug import spec_augment

__all__ = [
    "NoiseConfig",
    "ReverbConfig",
    "SimulationConfig",
    "SpecAugConfig",
    "SpeedConfig",
    "VolumeConfig",
    "SimResult",
    "Simulator",
    "dump_wav",
    "rescale_ali",
    "seed_worker",
    "simulate_data_dir",
    "spec_augment",
    "speed_perturb",
    "utterance_rng",
    "volume_perturb",
]
