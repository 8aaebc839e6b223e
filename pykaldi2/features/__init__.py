"""Features: Kaldi-compatible fbank/MFCC, CMVN, deltas/splicing, and their storage.

    >>> from pykaldi2.features import FbankConfig, make_extractor, open_features
    >>> feats = make_extractor(FbankConfig(num_mel_bins=80)).compute(samples, 16000)  # (T, 80)
    >>> reader = open_features("data/train")          # feats.scp -> HDF5 or Kaldi ark
    >>> processed = ProcessedFeatures("data/train", FeaturePipelineConfig(delta_order=2))

Modules: ``extractors`` (configs, registry, fbank/MFCC), ``cmvn``, ``transforms`` (deltas,
splicing), ``storage`` (HDF5, ark/scp, FeatureReader), ``compute`` (compute-feats,
compute-cmvn over a data dir), ``pipeline`` (CMVN + deltas + splicing per utterance),
``reference`` (slow numpy versions of every kernel, for tests), ``transducer_frontend`` (the
RNN-T front end: CMN + frame stacking, shared by training, streaming and ONNX decoding).
"""

from pykaldi2.features.cmvn import (
    SlidingCmnConfig,
    apply_cmvn,
    apply_cmvn_sliding,
    compute_cmvn_stats,
)
from pykaldi2.features.compute import (
    compute_cmvn,
    compute_feats,
    load_cmvn,
    load_feature_config,
)
from pykaldi2.features.extractors import (
    FEATURE_TYPES,
    FbankConfig,
    FeatureExtractor,
    FeatureStream,
    MfccConfig,
    config_from_dict,
    make_extractor,
)
from pykaldi2.features.pipeline import FeaturePipelineConfig, ProcessedFeatures
from pykaldi2.features.storage import FeatureReader, open_features
from pykaldi2.features.transforms import DeltaConfig, add_deltas, splice_feats

__all__ = [
    "FEATURE_TYPES",
    "DeltaConfig",
    "FbankConfig",
    "FeatureExtractor",
    "FeatureStream",
    "FeaturePipelineConfig",
    "FeatureReader",
    "MfccConfig",
    "ProcessedFeatures",
    "SlidingCmnConfig",
    "add_deltas",
    "apply_cmvn",
    "apply_cmvn_sliding",
    "compute_cmvn",
    "compute_cmvn_stats",
    "compute_feats",
    "config_from_dict",
    "load_cmvn",
    "load_feature_config",
    "make_extractor",
    "open_features",
    "splice_feats",
]
