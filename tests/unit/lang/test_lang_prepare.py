"""prepare-lang on a tiny dictionary: symbol tables, phones/ sets, L.fst paths, topology."""

from __future__ import annotations

import math

import pytest

from pykaldi2.kaldi import kaldifst, khg
from pykaldi2.lang.lang_dir import load_lang
from pykaldi2.lang.prepare_lang import PrepareLangConfig, prepare_lang
from pykaldi2.lang.topo import TopoConfig, TopoEntry, make_topo
from pykaldi2.utils.errors import DataError

LEXICON = """A AH
A EY
AND AE N D
AN AE N
RED R EH D
READ R EH D
<UNK> SPN
"""


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dict")
    (d / "lexicon.txt").write_text(LEXICON)
    (d / "nonsilence_phones.txt").write_text("AH\nAE\nEY\nN\nD\nR\nEH\n")
    (d / "silence_phones.txt").write_text("SIL\nSPN\n")
    (d / "optional_silence.txt").write_text("SIL\n")
    (d / "extra_questions.txt").write_text("AH AE EY\n")
    return d


@pytest.fixture(scope="module")
def lang(dict_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("l") / "lang"
    prepare_lang(dict_dir, "<UNK>", out)
    return load_lang(out)


def transduce(fst, labels: list[int]) -> dict[tuple[int, ...], float]:
    """Output label sequences (without <eps>) of the paths of ``fst`` accepting ``labels``,
    with their costs, by composing a linear acceptor and enumerating the (acyclic) result."""
    a = kaldifst.make_linear_acceptor(labels)
    kaldifst.arcsort(fst, sort_type="ilabel")
    c = kaldifst.compose(a, fst)
    out: dict[tuple[int, ...], float] = {}

    def dfs(s, olabels, cost):
        f = c.final(s)
        if f != kaldifst.TropicalWeight.zero:
            key = tuple(x for x in olabels if x != 0)
            out[key] = min(out.get(key, math.inf), cost + f.value)
        for arc in kaldifst.ArcIterator(c, s):
            dfs(arc.nextstate, olabels + [arc.olabel], cost + arc.weight.value)

    if c.num_states:
        dfs(c.start, [], 0.0)
    return out


def test_symbol_tables(lang):
    p, w = lang.phones, lang.words
    assert p.sym(0) == "<eps>" and p.symbols[1:6] == ["SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S"]
    assert "AH_B" in p and "AH" not in p  # nonsilence phones exist only position-dependent
    # RED/READ homophones need #1, #2; plus one extra for silence: #0..#3
    assert p.symbols[-4:] == ["#0", "#1", "#2", "#3"]
    assert lang.disambig_phones == p.ids(["#0", "#1", "#2", "#3"])
    assert w.symbols == ["<eps>", "<UNK>", "A", "AN", "AND", "READ", "RED", "#0", "<s>", "</s>"]
    assert lang.oov_id == 1 and lang.word_disambig == w.id("#0")
    assert lang.optional_silence == p.id("SIL")
    assert len(lang.silence_phones) == 10 and len(lang.nonsilence_phones) == 28
    assert lang.base_phone(p.id("EH_I")) == "EH"


def test_phones_dir(lang):
    roots = lang.roots()
    assert roots[0] == (True, True, lang.phones.ids(["SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S"]))
    assert len(roots) == 9 and lang.read_int_sets("sets") == [r[2] for r in roots]
    eq = lang.read_int_sets("extra_questions")
    assert eq[0] == lang.phones.ids([f"{p}_{s}" for p in ("AH", "AE", "EY") for s in "BEIS"])
    assert lang.phones.ids(["AH_B", "AE_B", "EY_B", "N_B", "D_B", "R_B", "EH_B"]) in eq
    wb = lang.word_boundary()
    assert wb[lang.phones.id("SIL")] == "nonword" and wb[lang.phones.id("D_E")] == "end"
    # as prepare_lang.sh: silence phones by their suffix too
    assert wb[lang.phones.id("SIL_B")] == "begin" and wb[lang.phones.id("SPN_S")] == "singleton"
    assert wb[lang.phones.id("AH_S")] == "singleton" and len(wb) == 38
    align = (lang.dir / "phones" / "align_lexicon.txt").read_text().splitlines()
    assert "<eps> <eps> SIL" in align and "AND AND AE_B N_I D_E" in align
    assert align == sorted(align, key=str.encode)  # LC_ALL=C sort
    assert (lang.dir / "phones" / "silence.csl").read_text().strip() == ":".join(
        str(i) for i in range(1, 11)
    )


def test_L_paths(lang):
    L = lang.read_L()
    p, w = lang.phones, lang.words
    half = -math.log(0.5)

    def words_of(phones):
        return {tuple(w.syms(k)): v for k, v in transduce(L, p.ids(phones.split())).items()}

    # no silence: start->loop (no-sil) and the word's last arc (no-sil)
    assert words_of("AE_B N_I D_E") == pytest.approx({("AND",): 2 * half})
    assert words_of("SIL AE_B N_E R_B EH_I D_E SIL") == pytest.approx(
        {("AN", "READ"): 3 * half, ("AN", "RED"): 3 * half}  # sil at start, after READ
    )
    assert words_of("AH_S EY_S") == pytest.approx({("A", "A"): 3 * half})
    assert words_of("AE_B N_I") == {}  # not a word
    assert words_of("AE_B N_E D_E") == {}
    assert words_of("SPN_S") == pytest.approx({("<UNK>",): 2 * half})


def test_L_disambig(lang):
    L = kaldifst.StdVectorFst.read(str(lang.L_disambig_path))  # what later stages do
    p, w = lang.phones, lang.words
    got = transduce(L, p.ids("R_B EH_I D_E #1".split()))
    assert set(got) == {(w.id("RED"),)}  # the homophone is resolved by #1
    got = transduce(L, p.ids("R_B EH_I D_E #2 SIL #3".split()))
    assert set(got) == {(w.id("READ"),)}  # silence is followed by the highest #N
    assert transduce(L, p.ids("R_B EH_I D_E".split())) == {}
    # the #0:#0 self-loop passes G's backoff symbol through L
    got = transduce(L, p.ids("#0 AH_S #0".split()))
    assert set(got) == {(w.id("#0"), w.id("A"), w.id("#0"))}


def test_pron_probs_and_no_silence(dict_dir, tmp_path):
    d = tmp_path / "dictp"
    d.mkdir()
    for f in ("nonsilence_phones.txt", "silence_phones.txt", "optional_silence.txt"):
        (d / f).write_text((dict_dir / f).read_text())
    (d / "lexiconp.txt").write_text("A 1.0 AH\nA 0.25 EY\n<UNK> 1.0 SPN\n")
    prepare_lang(d, "<UNK>", tmp_path / "lang", position_dependent=False, sil_prob=0.0)
    lang = load_lang(tmp_path / "lang")
    assert not lang.position_dependent and "AH" in lang.phones and "SIL_B" not in lang.phones
    got = transduce(lang.read_L(), lang.phones.ids(["EY", "AH"]))
    assert got == pytest.approx({tuple(lang.words.ids(["A", "A"])): -math.log(0.25)})
    assert transduce(lang.read_L(), lang.phones.ids(["SIL", "AH"])) == {}


def test_oov_must_be_in_lexicon(dict_dir, tmp_path):
    with pytest.raises(DataError, match="OOV word '<SPOKEN_NOISE>' is not in the lexicon"):
        prepare_lang(dict_dir, "<SPOKEN_NOISE>", tmp_path / "lang")
    assert not (tmp_path / "lang").exists()


@pytest.mark.parametrize(
    "config,nonsil_pdfs,sil_pdfs",
    [
        (TopoConfig(), 3, 3),
        (TopoConfig.kaldi_default(), 3, 5),
        (TopoConfig(TopoEntry("left-to-right", 2), TopoEntry("ergodic", 4)), 2, 4),
        (TopoConfig.chain(), 2, 2),
    ],
)
def test_topology_reads_in_kaldi(config, nonsil_pdfs, sil_pdfs):
    topo = khg.HmmTopology()
    topo.read(make_topo([3, 4, 5], [1, 2], config))
    assert topo.phones == [1, 2, 3, 4, 5]
    assert topo.num_pdf_classes(4) == nonsil_pdfs and topo.num_pdf_classes(1) == sil_pdfs
    assert TopoConfig.from_dict(config.to_dict()) == config


def test_lang_feeds_training_graph_compiler(lang):
    """What hmm/ does with a lang dir: topology -> monophone tree -> compile a training graph."""
    topo = lang.read_topo()
    assert topo.phones == lang.phone_ids
    ctx = khg.monophone_context_dependency(topo.phones, topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx, topo)
    gc = khg.TrainingGraphCompiler(
        tm, ctx, lang.read_L_disambig(), lang.disambig_phones, khg.TrainingGraphCompilerOptions()
    )
    graph = gc.compile_graph_from_text(lang.words.ids(["RED", "A", "AND"]))
    assert graph.num_states > 3 * 3


def test_config_saved(lang):
    cfg = PrepareLangConfig.from_dict(lang.config())
    assert cfg.oov_word == "<UNK>" and cfg.sil_prob == 0.5 and cfg.topo == TopoConfig()


def test_validate_and_load_errors(lang, tmp_path):
    from pykaldi2.lang.validate import validate_lang

    assert validate_lang(lang.dir) == []
    with pytest.raises(DataError, match="lang dir not found"):
        load_lang(tmp_path / "nope")
    assert "phones.txt" in validate_lang(tmp_path)[0]  # an empty dir: what is missing is named


@pytest.mark.parametrize("corpus", ["an4", "yesno"])
def test_lang_dir_is_kaldis(kaldi_ref, tmp_path, corpus):
    """prepare-lang on the dict Kaldi's prepare_lang.sh was given (with Kaldi's 5-state ergodic
    silence) writes Kaldi's files: every phones/ file, phones.txt, words.txt, oov.*, topo byte
    for byte; L.fst / L_disambig.fst with the same arcs (yesno: the same bytes)."""
    from pykaldi2.cli.main import main
    from pykaldi2.kaldi import kaldifst

    ref = kaldi_ref / corpus / "lang"
    out = tmp_path / "lang"
    opts = ["--sil-states", "5", "--sil-topo", "ergodic"]
    if corpus == "yesno":
        opts.append("--position-independent")
    oov = "<UNK>" if corpus == "an4" else "<SIL>"
    assert main(["prepare-lang", *opts, str(kaldi_ref / corpus / "dict"), oov, str(out)]) == 0
    names = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
    for name in names:
        if name in ("G.fst", "L.fst", "L_disambig.fst"):
            continue
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    extra = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - set(names)
    assert extra == {"prepare_lang.json"}

    def arcs(path):
        f = kaldifst.StdVectorFst.read(str(path))
        return sorted(
            (s, a.nextstate, a.ilabel, a.olabel, a.weight.value)
            for s in range(f.num_states)
            for a in kaldifst.ArcIterator(f, s)
        )

    for name in ("L.fst", "L_disambig.fst"):
        assert arcs(out / name) == arcs(ref / name), name
        if corpus == "yesno":
            assert (out / name).read_bytes() == (ref / name).read_bytes()
