"""HMM-GMM acoustic models: topology, monophone/triphone GMM training, trees, LDA/MLLT, alignment.

One module per group of Kaldi binaries, one function per binary, named after it:

- :mod:`.topo`     -- topology text (``make_topo``, ``read_topo``)
- :mod:`.model`    -- :class:`GmmModel` (transition model + tree + AmDiagGmm), ``gmm_info``
- :mod:`.gmm`      -- gmm-acc-stats-ali, gmm-est (with mix-up), gmm-boost-silence
- :mod:`.align`    -- compile-train-graphs, align-equal-compiled, gmm-align-compiled
- :mod:`.ali`      -- ali-to-pdf, ali-to-phones, ali archives (ark/scp)
- :mod:`.mono`     -- gmm-init-mono and train_mono.sh (:class:`MonoConfig`)
- :mod:`.tree`     -- acc-tree-stats, cluster-phones, build-tree, Kaldi binary tree writer
- :mod:`.tri`      -- gmm-init-model, convert-ali, train_deltas.sh (:class:`DeltasConfig`)
- :mod:`.lda`      -- est-lda, est-mllt, train_lda_mllt.sh (:class:`LdaMlltConfig`)

Features come in as a mapping ``utt -> (T, F) float32 array``; transcripts as ``utt -> word ids``;
the lexicon as an L.fst (``kaldifst.StdVectorFst`` or a path) plus the disambiguation phone ids.
"""
