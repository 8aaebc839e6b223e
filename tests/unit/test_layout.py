"""The layout rule, checked on the source: a module imports only from folders to its left
(data -> features -> simulation -> lang -> hmm -> nnet -> losses -> training -> decoding ->
export, cli on top), and inside training/ the data flow reads one way (shared data ->
each criterion's examples -> model building / model dirs -> trainer -> criterion), with no
criterion module importing another. Lazy (function-level) imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "pykaldi2"
FOLDERS = ["utils", "kaldi", "data", "features", "simulation", "lang", "hmm", "nnet", "losses",
           "training", "decoding", "export", "api", "cli"]  # fmt: skip
#: Known exceptions: the transducer's final dir is written and read in the export format.
ALLOWED = {
    ("training/model_dir.py", "pykaldi2.export.model_dir"),
    ("decoding/streaming.py", "pykaldi2.export.model_dir"),
}
CRITERIA = {"ce", "chain", "se", "transducer"}
#: training/ modules by layer: a module imports only modules of lower layers.
TRAINING_LAYERS = {
    "config": 0, "data": 1, "shards": 1, "utterance_splitter": 1, "egs_archive": 1,
    "chain_data": 1.5, "ce_egs": 2,
    "chain_egs": 2, "chain_get_egs": 2, "se_egs": 2, "transducer_egs": 2,
    "model_dir": 3, "ema": 3, "checkpoint": 3, "chain_combine": 3, "distributed": 3, "schedule": 3, "trainer": 4,
    **{c: 5 for c in CRITERIA},
}  # fmt: skip


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pykaldi2"):
            if node.module == "pykaldi2" or node.module == "pykaldi2.training":
                out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("pykaldi2.")]
    return out


def test_modules_import_only_from_the_left():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        own = rel.parts[0].removesuffix(".py")
        if own not in FOLDERS:
            continue
        for line, mod in _imports(path):
            other = mod.split(".")[1] if "." in mod else None
            if other in FOLDERS and FOLDERS.index(other) > FOLDERS.index(own):
                if (rel.as_posix(), mod) not in ALLOWED:
                    bad.append(f"{rel}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


def test_training_data_flow_reads_one_way():
    assert {p.stem for p in (PKG / "training").glob("*.py")} - {"__init__"} == set(
        TRAINING_LAYERS
    ), "a new training/ module: give it a layer here"
    bad = []
    for name, layer in TRAINING_LAYERS.items():
        for line, mod in _imports(PKG / "training" / f"{name}.py"):
            if not mod.startswith("pykaldi2.training."):
                continue
            other = mod.split(".")[2]
            if TRAINING_LAYERS[other] >= layer:
                bad.append(f"training/{name}.py:{line} imports {mod}")
    assert not bad, "\n".join(bad)
