import subprocess
import sys

from pykaldi2.cli.main import build_parser, main


def test_help_lists_subcommands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: pykaldi2" in out


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert name in text and len(text) > 40, name


def test_console_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "pykaldi2", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "pykaldi2" in proc.stdout


def test_bin_scripts_map_to_existing_subcommands():
    import re
    from pathlib import Path

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for script in (Path(__file__).resolve().parents[2] / "bin").glob("*.py"):
        m = re.search(r'run\("([a-z0-9-]+)"\)', script.read_text())
        if m:
            assert m.group(1) in sub.choices, f"{script.name} runs unknown `{m.group(1)}`"
