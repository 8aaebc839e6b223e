"""Acoustic models (nn.Module only): BLSTM, TDNN-F, the chain model (a body with the chain
output and an xent head, :mod:`pykaldi2.nnet.chain`); transducer in
:mod:`pykaldi2.nnet.transducer`.

Dimension legend: N batch, T frames, F input feature dim, C output classes (pdf_ids).
"""
