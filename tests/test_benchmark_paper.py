"""tools/benchmark.py --section paper (the paper's ImageNet table), and every command's --help,
which answers before torch is imported and gives every option's default."""

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from revvideo.utils.complexity import count_parameters

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "demo/classify.py",
    "tools/benchmark.py",
    "tools/convert_checkpoint.py",
    "tools/make_synthetic_dataset.py",
    "tools/prepare_kinetics.py",
    "tools/run_net.py",
]
# Modules whose import takes seconds: none of them may be loaded to answer --help.
HEAVY = ("torch", "torchvision", "pytorchvideo", "av", "fvcore", "revvideo.models")


def _front(command):
    """The module that `tools/<name>.py` or `demo/<name>.py` runs, as the console scripts do."""
    return importlib.import_module(f"revvideo.cli.{Path(command).stem}")


def _run(*arguments, timeout=60):
    return subprocess.run(
        [sys.executable, *arguments],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        timeout=timeout,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_help_answers_without_importing_torch(command):
    run = _run("-X", "importtime", command, "--help")

    assert run.returncode == 0
    assert "usage:" in run.stdout and "(default: " in run.stdout
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines()}
    assert not [name for name in imported if name.split(".")[0] in HEAVY], run.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_and_option_errors_answer_within_a_second(command):
    # The best of three: a loaded 2-core machine may stall any one run.
    for arguments in (["--help"], ["--no-such-option"]):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run = _run(command, *arguments)
            times.append(time.perf_counter() - start)
        assert run.returncode == (0 if arguments == ["--help"] else 2)
        assert min(times) < 1.0, times


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_its_default(command):
    parser = _front(command).build_parser()
    options = [action for action in parser._actions if action.option_strings]
    assert len(options) > 1
    for action in options:
        if action.dest != "help":
            said = "required" if action.required else "(default: "
            assert said in action.help, action.option_strings


def test_the_paper_pairs_are_the_choices_of_paper_models():
    from revvideo.benchmark.paper import PAPER_PAIRS

    assert tuple(PAPER_PAIRS) == _front("tools/benchmark.py").PAPER_MODELS


def test_the_paper_models_have_the_published_sizes():
    from revvideo.benchmark.paper import PAPER_PAIRS as pairs

    # Millions of parameters at 224 px: torchvision's ViTs, DeiT-S (ViT-S), MViT-B-16 (37.0,
    # the MViT paper) and the released Rev-ViT-S/B and Rev-MViT-B checkpoints.
    published = {
        "ViT-S": (22.05, 22.43),
        "ViT-B": (86.57, 87.34),
        "ViT-L": (304.33, 305.35),
        "MViT-B": (37.0, 39.69),
    }
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        for pair, millions in published.items():
            for model, expected in zip(pairs[pair], millions, strict=True):
                assert count_parameters(model.build(224)) / 1e6 == pytest.approx(expected, rel=5e-3)
    paper = {pair: (a.paper_mb, b.paper_mb) for pair, (a, b) in pairs.items()}
    assert paper == {
        "ViT-S": (66.5, 8.8),
        "ViT-B": (129.7, 17.0),
        "ViT-L": (349.3, 22.6),
        "MViT-B": (153.6, 66.8),
    }


@pytest.mark.slow
def test_the_paper_section_sets_each_pair_side_by_side(tmp_path):
    figures = tmp_path / "paper.json"
    run = _run(
        "tools/benchmark.py",
        "--section",
        "paper",
        "--size",
        "32",
        "--paper-models",
        "ViT-S",
        "MViT-B",
        "--device",
        "cpu",
        "--json",
        str(figures),
        timeout=600,
    )

    assert run.returncode == 0, run.stderr
    rows = json.loads(figures.read_text())["paper"]["rows"]
    assert [row["model"] for row in rows] == [
        "ViT-S (torchvision twin)",
        "Rev-ViT-S",
        "MViT-B (revvideo, image)",
        "Rev-MViT-B (image)",
    ]
    for plain, reversible in (rows[:2], rows[2:]):
        assert reversible["peak_x_lower"] == pytest.approx(
            plain["peak_mib_per_clip"] / reversible["peak_mib_per_clip"]
        )
        assert reversible["paper_x_lower"] == pytest.approx(
            plain["paper_mb_per_image"] / reversible["paper_mb_per_image"]
        )
        # Even at 32 px the reversible backward keeps a small fraction of the activations.
        assert reversible["saved_x_lower"] > 5 and reversible["peak_x_lower"] > 5
        assert reversible["meets_paper"] is True
        assert "peak_x_lower" not in plain
    lines = run.stdout.splitlines()
    assert lines[1].startswith("32x32 images, fp32, cpu, 1 threads")
    assert lines[2].split("|")[4].strip() == "paper MB/img"
    assert lines[5].split("|")[4].strip() == "8.8"  # Rev-ViT-S, as the paper reports it
    assert lines[-1] == "every reversible row's peak reduction at least the paper's: yes"
