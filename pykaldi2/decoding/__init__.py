"""Hybrid WFST decoding, raw lattices, LM-weight sweeps and Kaldi-compatible scoring.

- :mod:`~pykaldi2.decoding.wfst`: one utterance through HCLG (best path, raw lattice, GMMs).
- :mod:`~pykaldi2.decoding.lattice`: raw lattices as arrays, Kaldi text archives, best paths
  and N-best under LM weight / word insertion penalty.
- :mod:`~pykaldi2.decoding.batch`: many utterances in parallel processes into a decode dir.
- :mod:`~pykaldi2.decoding.sweep`: score a decode dir over LMWT x WIP (wer_LMWT_WIP, best_wer).
- :mod:`~pykaldi2.decoding.scoring`: compute-wer exactly as Kaldi prints it.
"""
