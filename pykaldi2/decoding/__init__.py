"""Hybrid WFST decoding (HCLG), raw lattices, LM-weight sweeps and Kaldi-compatible scoring."""
