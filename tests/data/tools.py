"""The tools/ commands, run in this process: a new one takes seconds to import what they need."""

import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def tool_path(name: str) -> str:
    """tools/<name>.py, to run as a script."""
    return str(TOOLS / f"{name}.py")


def load_tool(name: str):
    """The module of tools/<name>.py."""
    spec = importlib.util.spec_from_file_location(name, tool_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(tool, capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the tool's command line."""
    try:
        status = tool.main([str(arg) for arg in args])
    except SystemExit as exit:  # argparse's way out
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
