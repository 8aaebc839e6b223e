"""HMM-GMM acoustic models: topology, monophone/triphone GMM training, trees, LDA/MLLT, fMLLR
(SAT), alignment -- run as Kaldi's steps/ scripts run them: the data split by speaker into NJ
jobs, each streaming its part from disk, statistics written per job, summed and re-estimated.

One module per group of Kaldi binaries, one function per binary, named after it:

- :mod:`.topo`       -- ``read_topo`` (text or lang/topo -> ``khg.HmmTopology``)
- :mod:`.kaldi_io`   -- Kaldi's model files both ways (TransitionModel, AmDiagGmm, tree, matrices,
                        vectors, opts files), binary and text
- :mod:`.model`      -- :class:`~.model.GmmModel` (transition model + tree + AmDiagGmm) saved and
                        loaded as a Kaldi exp dir, gmm-info
- :mod:`.exp_dir`    -- ali/exp dirs, ours and Kaldi's: alignments (ali.scp, ali.N.gz), fMLLR
                        trans.N, phones.txt checks, side files
- :mod:`.gmm`        -- gmm-acc-stats-ali (fast + reference), gmm-sum-accs, gmm-est, gmm-mixup,
  gmm-boost-silence (the GMMs as numpy arrays)
- :mod:`.kaldi_rand` -- Kaldi's ``rand()`` stream (glibc's), replayed for k-means and mixing up
- :mod:`.align`      -- compile-train-graphs, align-equal-compiled, gmm-align-compiled
- :mod:`.ali`        -- ali-to-pdf, ali-to-phones, SplitToPhones, ali archives (ark/scp/gz),
                        alignment checks and phones_to_ali
- :mod:`.streams`    -- features (CMVN, deltas, LDA, fMLLR), transcripts, alignments as streams
- :mod:`.jobs`       -- the per-job work (accumulate [after realigning], align, tree stats ...)
- :mod:`.training`   -- the realign/accumulate/estimate loop and configs shared by train_*.sh
- :mod:`.mono`       -- gmm-init-mono and steps/train_mono.sh (``MonoConfig``)
- :mod:`.tree_stats` -- acc-tree-stats, sum-tree-stats and the Gaussian clustering objective
- :mod:`.questions`  -- cluster-phones and compile-questions
- :mod:`.tree`       -- build-tree (stub map, splitting, clustering, rounding; fast + reference)
- :mod:`.event_map`  -- Kaldi's EventMap in Python and the tree operations on it
- :mod:`.tri`        -- gmm-init-model, convert-ali, steps/train_deltas.sh (``DeltasConfig``)
- :mod:`.lda`        -- acc-lda/est-lda, gmm-acc-mllt/est-mllt, steps/train_lda_mllt.sh
- :mod:`.fmllr`      -- fMLLR statistics and estimation (gmm-est-fmllr)
- :mod:`.sat`        -- steps/train_sat.sh and steps/align_fmllr.sh
- :mod:`.ali_dir`    -- steps/align_si.sh (ali dirs in Kaldi's layout)
- :mod:`.inputs`     -- in-memory views of a data dir (small jobs, tests)
- :mod:`.chain`      -- LF-MMI from alignments: the chain transition model, chain-est-phone-lm +
                        chain-make-den-fst, chain-get-supervision (whole utterances or chunks)
- :mod:`.graph_model` -- which model a graph dir was built for (model_id, num_pdfs), checked
                        wherever a graph meets a model
- :mod:`.decoder`    -- HCLG decoding: the compiled LatticeFasterDecoder, OpenFst graph reader
  and lattice determinization (C++ in ``csrc/``; slow references in :mod:`.decoder_reference`)
- :mod:`.lattice_arrays` -- raw lattices as arrays (state levels and times) and the transition
                        model's transition_id -> pdf / phone tables (``TransitionInfo``)
- :mod:`.latgen`     -- latgen-faster-mapped and nnet-align-compiled in a pool of torch-free
                        worker processes (train-se's denominator lattices and numerators)

Training functions take a data dir and a lang dir and write an exp dir (``final.mdl``,
``tree``, ``ali.JOB.gz``, ``num_jobs``, per-job logs in ``log/``); the jobs run through
:class:`pykaldi2.utils.jobs.JobRunner`.
"""
