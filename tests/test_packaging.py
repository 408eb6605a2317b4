"""The installed distribution: revvideo alone, every package of it listed, every console script
the `main` of a revvideo.cli module that a front of the checkout runs (`revvideo-train` is
`python tools/run_net.py`, ...), and the configs shipped as its data and found from any folder."""

import configparser
import importlib
import importlib.util
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path

import pytest

from revvideo.config import config_file, load_config
from revvideo.utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "revvideo-train": "tools/run_net.py",
    "revvideo-classify": "demo/classify.py",
    "revvideo-benchmark": "tools/benchmark.py",
    "revvideo-prepare-kinetics": "tools/prepare_kinetics.py",
    "revvideo-convert-checkpoint": "tools/convert_checkpoint.py",
    "revvideo-make-synthetic-dataset": "tools/make_synthetic_dataset.py",
    "revvideo-export": "tools/export.py",
    "revvideo-serve": "tools/serve.py",
}


def _installed() -> bool:
    try:
        distribution("revvideo")
    except PackageNotFoundError:
        return False
    return True


# A checkout on PYTHONPATH (the GPU machine) has neither console scripts nor setuptools.
needs_install = pytest.mark.skipif(not _installed(), reason="revvideo is not installed")


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


@needs_install
def test_every_library_package_is_listed():
    from setuptools import find_packages

    listed = set(_setup_cfg()["options"]["packages"].split())
    assert set(find_packages(str(ROOT), include=["revvideo", "revvideo.*"])) == listed


@needs_install
def test_every_front_is_a_console_script():
    scripts = {script.name: script for script in entry_points(group="console_scripts")}
    fronts = sorted(
        str(path.relative_to(ROOT))
        for folder in ("tools", "demo")
        for path in (ROOT / folder).glob("[!_]*.py")
    )
    assert sorted(SCRIPTS.values()) == fronts
    commands = sorted(path.stem for path in (ROOT / "revvideo" / "cli").glob("[!_]*.py"))
    assert sorted(Path(front).stem for front in SCRIPTS.values()) == commands
    for name, front in SCRIPTS.items():
        target = importlib.import_module(f"revvideo.cli.{Path(front).stem}")
        assert Path(target.__file__).resolve() == ROOT / "revvideo" / "cli" / Path(front).name
        assert scripts[name].load() is target.main
        assert _script_module(ROOT / front).main is target.main


def _script_module(path: Path):
    """The file at `path`, imported as a module (not as __main__: it runs nothing)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options(help_text: str) -> list[str]:
    return [line.split()[0] for line in help_text.splitlines() if line.startswith("  -")]


@needs_install
@pytest.mark.parametrize("name", ["revvideo-train", "revvideo-classify"])
def test_a_console_script_answers_as_its_front(name):
    front, installed = (
        subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        for command in (
            [sys.executable, SCRIPTS[name], "--help"],
            [Path(sys.executable).parent / name, "--help"],
        )
    )
    assert installed.returncode == front.returncode == 0
    assert installed.stdout.startswith(f"usage: {name} ")
    assert _options(installed.stdout) == _options(front.stdout) != []


@needs_install
def test_the_shipped_configs_load_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    for name in ("configs/synthetic/REV_MVIT_XS.yaml", "kinetics/REV_MVIT_B_16x4.yaml"):
        found = Path(config_file(name))
        assert found.read_bytes() == (ROOT / "configs" / name.removeprefix("configs/")).read_bytes()
    # A fine-tuning config's _BASE_ resolves next to the shipped file.
    assert load_config("configs/finetune/REV_MVIT_B_16x4.yaml").MVIT.REV.ENABLE is True
    with pytest.raises(ConfigError, match=r"config file not found: configs/nope\.yaml \(revvideo "):
        load_config("configs/nope.yaml")


def test_every_config_is_shipped():
    package_data = _setup_cfg()["options.package_data"]["revvideo"].split()
    shipped = {path for pattern in package_data for path in (ROOT / "revvideo").glob(pattern)}
    assert shipped == set((ROOT / "revvideo" / "configs").rglob("*.yaml"))
