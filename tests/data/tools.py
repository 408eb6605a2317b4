"""The tools/ commands, run in this process: a new one takes seconds to import what they need."""

import importlib
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def tool_path(name: str) -> str:
    """tools/<name>.py, to run as a script."""
    return str(TOOLS / f"{name}.py")


def load_tool(name: str):
    """The module that tools/<name>.py runs (revvideo.cli.<name>)."""
    return importlib.import_module(f"revvideo.cli.{name}")


def run_tool(tool, capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the tool's command line."""
    try:
        status = tool.main([str(arg) for arg in args])
    except SystemExit as exit:  # argparse's way out
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
