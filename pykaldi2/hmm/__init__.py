"""HMM-GMM acoustic models: topology, monophone/triphone GMM training, trees, LDA/MLLT, alignment.

One module per group of Kaldi binaries, one function per binary, named after it:

- :mod:`.topo`       -- ``read_topo`` (text or lang/topo -> ``khg.HmmTopology``)
- :mod:`.kaldi_io`   -- Kaldi's model files both ways (TransitionModel, AmDiagGmm, tree, matrices,
                        vectors, opts files), binary and text
- :mod:`.model`      -- :class:`~.model.GmmModel` (transition model + tree + AmDiagGmm) saved and
                        loaded as a Kaldi exp dir, gmm-info
- :mod:`.exp_dir`    -- ali/exp dirs, ours and Kaldi's: alignments (ali.scp, ali.N.gz), fMLLR
                        trans.N, phones.txt checks, side files
- :mod:`.gmm`        -- gmm-acc-stats-ali (fast + reference), gmm-est (mix-up), gmm-boost-silence
- :mod:`.align`      -- compile-train-graphs, align-equal-compiled, gmm-align-compiled
- :mod:`.ali`        -- ali-to-pdf, ali-to-phones, SplitToPhones, ali archives (ark/scp/gz),
                        alignment checks and phones_to_ali
- :mod:`.training`   -- the realign/accumulate/estimate loop and configs shared by train_*.sh
- :mod:`.mono`       -- gmm-init-mono and steps/train_mono.sh (``MonoConfig``)
- :mod:`.tree_stats` -- acc-tree-stats and the Gaussian clustering objective
- :mod:`.questions`  -- cluster-phones (questions by top-down clustering)
- :mod:`.tree`       -- build-tree (greedy splitting, post-clustering; fast + reference search)
- :mod:`.event_map`  -- Kaldi's EventMap in Python
- :mod:`.tri`        -- gmm-init-model, convert-ali, steps/train_deltas.sh (``DeltasConfig``)
- :mod:`.lda`        -- acc-lda/est-lda, gmm-acc-mllt/est-mllt, steps/train_lda_mllt.sh
- :mod:`.inputs`     -- features (CMVN, deltas, LDA) and transcripts from data + lang dirs
- :mod:`.chain`      -- LF-MMI from alignments: the chain transition model, chain-est-phone-lm +
                        chain-make-den-fst, chain-get-supervision (whole utterances or chunks)
- :mod:`.graph_model` -- which model a graph dir was built for (model_id, num_pdfs), checked
                        wherever a graph meets a model
- :mod:`.decoder`    -- HCLG decoding: the compiled LatticeFasterDecoder, OpenFst graph reader
  and lattice determinization (C++ in ``csrc/``; slow references in :mod:`.decoder_reference`)

Features come in as a mapping ``utt -> (T, F) float32 array``; transcripts as ``utt -> word ids``;
the lexicon as an L.fst (``kaldifst.StdVectorFst`` or a path) plus the disambiguation phone ids.
"""
