import subprocess
import sys

import pytest

from pykaldi2 import kaldi


def test_pinned_versions_installed():
    found = kaldi.check_versions()
    assert found == kaldi.PINNED


def test_import_order_does_not_hang():
    code = "import pykaldi2.kaldi as k; print(k.khg.TransitionModel, k.kaldifst.StdVectorFst)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_arpa2fst_error_names_file(tmp_path):
    arpa = tmp_path / "bad.arpa"
    arpa.write_text("not an arpa file\n")
    words = tmp_path / "words.txt"
    words.write_text("<eps> 0\nA 1\n#0 2\n<s> 3\n</s> 4\n")
    with pytest.raises(RuntimeError, match="bad.arpa"):
        kaldi.arpa2fst(arpa, tmp_path / "G.fst", read_symbol_table=words)
