"""tools/benchmark.py --section peak: the allocator trace replayed to its peak, and the CPU's
live tensors at the peak (the CUDA run is in tests/cuda/test_cuda_tools.py)."""

import torch

from revvideo.benchmark import Settings
from revvideo.benchmark.peak import live_at_peak, run_peak
from revvideo.cli.benchmark import build_parser


def _alloc(addr, size, filename="/site-packages/torch/functional.py", line=1):
    return dict(
        action="alloc", addr=addr, size=size, frames=[dict(filename=filename, line=line, name="f")]
    )


def test_the_blocks_alive_at_the_peak_are_summed_by_the_model_line_that_made_them():
    attention = "/repo/revvideo/models/common.py"
    trace = [
        _alloc(1, 100, attention, 10),
        _alloc(2, 40, attention, 10),
        _alloc(3, 30),  # framework only: no model frame
        dict(action="free_requested", addr=1, size=100),
        dict(action="free_completed", addr=1, size=100),  # one free, not two
        _alloc(4, 50, attention, 20),  # 120 alive, below the peak of 170
        dict(action="free_completed", addr=99, size=7),  # allocated before the trace began
    ]
    peak, by_site = live_at_peak(trace)

    assert peak == 170
    assert by_site == {
        "common.py:10 f": 140,
        "no model frame (built-in ops' backward, the loss, the optimizer)": 30,
    }


def test_an_empty_trace_has_no_peak():
    assert live_at_peak([]) == (0, {})


def test_on_the_cpu_the_live_tensors_at_the_peak_are_summed_by_model_line_and_op():
    options = ["--section", "peak", "--device", "cpu", "--frames", "4", "--size", "32"]
    settings = Settings(**vars(build_parser().parse_args([*options, "--batch", "1"])))
    rows = {row["model"]: row for row in run_peak(settings, torch.device("cpu"))["rows"]}

    assert list(rows) == ["Rev-MViT-B", "MViT-B (revvideo)", "mvit_v1_b (torchvision)"]
    for row in rows.values():
        assert "peak_gib" not in row  # the allocator's figures are CUDA's
        assert 0 < len(row["sites"]) <= settings.peak_sites
        total = sum(size for _, size in row["sites"])
        assert 0 < total <= row["step_peak_mib_per_clip"] + 1e-9
        assert all(site.endswith(")") for site, _ in row["sites"])  # the op that allocated
    # The recomputing backward of the reversible model allocates inside revvideo's engine.
    reversible_sites = [site for site, _ in rows["Rev-MViT-B"]["sites"]]
    assert any(site.startswith("reversible.py:") for site in reversible_sites)
