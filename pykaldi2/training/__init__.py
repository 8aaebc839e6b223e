"""Training: one trainer loop for every criterion, distributed set-up, checkpoints, logging.

One library, one entry point per criterion (Kaldi's nnet3 and nnet3bin; ESPnet2's Trainer and
tasks). The data flow reads one way down this list; a module imports only from those above it,
and no criterion module imports another:

- :mod:`.config`: what every training config shares (overrides, YAML, ``simulation:``);
- :mod:`.data`: features, alignment targets (``ali-to-pdf``), the validation split;
- :mod:`.ce_egs`, :mod:`.chain_egs`, :mod:`.se_egs`, :mod:`.transducer_egs`: each criterion's
  training examples (frame-target chunks; numerator supervision; whole utterances with
  numerator alignments; token sequences) and their loaders;
- :mod:`.model_dir`: model building and the final model dirs (written and read);
- :mod:`.trainer` (with :mod:`.checkpoint`, :mod:`.distributed`, :mod:`.schedule`,
  :mod:`.ema`): the one loop and ``evaluate``;
- :mod:`.ce`, :mod:`.chain`, :mod:`.se`, :mod:`.transducer`: a criterion's config, its task /
  loss glue and its entry point (``train_ce``, ``train_chain``, ``train_se``,
  ``train_transducer``).
"""
