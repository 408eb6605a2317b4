"""Makes the command-line fronts importable under their installed names (`revvideo_tools`:
tools/, `revvideo_demo`: demo/) when the checkout is used without installing it, on PYTHONPATH,
as on the GPU machine (../shared/GPU.md), so that every test module collects there too."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

for name, folder in (("revvideo_tools", "tools"), ("revvideo_demo", "demo")):
    if importlib.util.find_spec(name) is None:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / folder / "__init__.py", submodule_search_locations=[str(ROOT / folder)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
