"""Hybrid WFST decoding, lattices, LM-weight sweeps and Kaldi-compatible scoring.

- :mod:`~pykaldi2.decoding.wfst`: one utterance through HCLG with the compiled
  LatticeFasterDecoder of :mod:`pykaldi2.hmm.decoder` (best path, determinized CompactLattice or
  raw lattice; GMM log-likelihoods).
- :mod:`~pykaldi2.decoding.lattice`: raw lattices as arrays, their Kaldi text form, best paths,
  n-best paths and words under LM weight / word insertion penalty (raw or compact lattices).
- :mod:`~pykaldi2.decoding.compact_lattice`: Kaldi's CompactLattice in arrays and text.
- :mod:`~pykaldi2.decoding.lattice_io`: Kaldi lattice archives (binary / text, ark / gz / scp).
- :mod:`~pykaldi2.decoding.word_align`: word times (lattice-align-words(-lexicon), nbest-to-ctm).
- :mod:`~pykaldi2.decoding.batch`: many utterances in parallel processes into a decode dir.
- :mod:`~pykaldi2.decoding.sweep`: score a decode dir over LMWT x WIP (wer_LMWT_WIP, best_wer).
- :mod:`~pykaldi2.decoding.scoring`: compute-wer exactly as Kaldi prints it.
"""
