"""Lexicon and lang dirs, n-gram LMs, G.fst, HCLG and the LF-MMI denominator graph.

    >>> from pykaldi2.lang import prepare_lang, load_lang, train_lm, format_lm
    >>> prepare_lang("data/local/dict", "<UNK>", "data/lang")          # utils/prepare_lang.sh
    >>> train_lm("data/train/text", "data/local/lm.arpa", words="data/lang/words.txt",
    ...          config=TrainLmConfig(order=3, skip_first_field=True))  # modified Kneser-Ney
    >>> format_lm("data/lang", "data/local/lm.arpa", "data/lang_test")  # G.fst
    >>> lang = load_lang("data/lang_test")

Graphs: :mod:`pykaldi2.lang.hclg` (mkgraph), with Kaldi's fstpushspecial
(:mod:`pykaldi2.lang.push_special`) and fstrmepslocal (:mod:`pykaldi2.lang.rm_eps_local`);
chain: :mod:`pykaldi2.lang.phone_lm`, :mod:`pykaldi2.lang.den_fst`. Transcripts to word ids,
the OOV words named: :mod:`pykaldi2.lang.transcripts` (sym2int.pl). Kaldi bindings are imported
lazily, so importing this package is cheap.
"""

from pykaldi2.lang.arpa import NgramLM, read_arpa, write_arpa
from pykaldi2.lang.format_lm import check_g, format_lm
from pykaldi2.lang.kneser_ney import train_kneser_ney
from pykaldi2.lang.lang_dir import Lang, load_lang
from pykaldi2.lang.lexicon import LexiconEntry, read_dict_dir, read_lexicon
from pykaldi2.lang.prepare_lang import PrepareLangConfig, prepare_lang
from pykaldi2.lang.symbols import SymbolTable
from pykaldi2.lang.topo import TopoConfig, TopoEntry, make_topo
from pykaldi2.lang.train_lm import TrainLmConfig, train_lm
from pykaldi2.lang.validate import validate_lang

__all__ = [
    "Lang",
    "LexiconEntry",
    "NgramLM",
    "PrepareLangConfig",
    "SymbolTable",
    "TopoConfig",
    "TopoEntry",
    "TrainLmConfig",
    "check_g",
    "format_lm",
    "load_lang",
    "make_topo",
    "prepare_lang",
    "read_arpa",
    "read_dict_dir",
    "read_lexicon",
    "train_kneser_ney",
    "train_lm",
    "validate_lang",
    "write_arpa",
]
