"""Acoustic models (nn.Module only): BLSTM, TDNN-F; transducer in :mod:`pykaldi2.nnet.transducer`.

Dimension legend: N batch, T frames, F input feature dim, C output classes (pdf_ids).
"""
