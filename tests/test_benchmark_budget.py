"""tools/benchmark.py --section budget on the CPU side: which rows run, and the levers' switches
(the CUDA runs are in tests/cuda/test_cuda_tools.py)."""

import json
from dataclasses import asdict

import pytest
import torch
from tiny_models import tiny_rev_mvit

import revvideo.benchmark
from revvideo.benchmark import Settings, budget
from revvideo.benchmark.budget import LEVER_NAMES, LEVERS, budget_cases
from revvideo.cli.benchmark import LEVERS as LEVER_CHOICES
from revvideo.cli.benchmark import build_parser
from revvideo.models import rev_mvit_b_16x4


def _settings(*options):
    return Settings(**vars(build_parser().parse_args(["--section", "budget", *options])))


def test_the_levers_the_command_offers_are_the_ones_it_can_switch_on():
    assert LEVER_NAMES == LEVER_CHOICES


def test_each_lever_combination_adds_a_rev_mvit_b_row_at_each_depth_and_precision():
    settings = _settings(
        "--budget-dtypes", "fp32", "bf16", "--budget-levers", "overlap", "overlap+compile",
        "--budget-depths", "32", "--budget-depth-dtypes", "bf16",
    )  # fmt: skip
    models = ["Rev-MViT-B", "MViT-B (revvideo)", "mvit_v1_b (torchvision)"]
    with_levers = [("overlap",), ("overlap", "compile")]
    assert budget_cases(settings) == [
        *[(name, 16, "fp32", ()) for name in models],
        *[("Rev-MViT-B", 16, "fp32", levers) for levers in with_levers],
        *[(name, 16, "bf16", ()) for name in models],
        *[("Rev-MViT-B", 16, "bf16", levers) for levers in with_levers],
        ("Rev-MViT-B", 32, "bf16", ()),
        ("MViT-B (revvideo)", 32, "bf16", ()),
        *[("Rev-MViT-B", 32, "bf16", levers) for levers in with_levers],
    ]


def test_without_levers_only_the_models_as_built_run():
    cases = budget_cases(_settings("--budget-dtypes", "fp32", "--budget-depths"))
    assert [levers for *_, levers in cases] == [(), (), ()]


def test_the_overlap_lever_switches_the_engine():
    model = tiny_rev_mvit()
    assert model.rev_backbone.overlap_recompute is False
    LEVERS["overlap"](model)
    assert model.rev_backbone.overlap_recompute is True


@pytest.mark.parametrize("text", ["", "overlap+", "fast", "overlap+fast"])
def test_an_unknown_lever_is_a_one_line_option_error(text, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--budget-levers", text])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --budget-levers: levers are")


def test_levers_run_on_a_model_that_trains():
    model = tiny_rev_mvit()
    LEVERS["overlap"](model)
    clip = torch.randn(2, 3, 4, 32, 32)
    model(clip).sum().backward()  # on the CPU the overlap runs the serial schedule
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_the_store_lever_stores_the_blocks_of_the_last_two_stages():
    with torch.device("meta"):
        model = LEVERS["store"](rev_mvit_b_16x4())  # transitions at layers 1, 3 and 14
    assert sorted(model.rev_backbone.stored_layers) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15]


def test_the_fill_lever_trains_at_the_batch_mvit_b_was_timed_at(monkeypatch):
    def fake_row(row_function, settings, device, name, depth, dtype, levers, fill_batch):
        if name == "MViT-B (revvideo)" and dtype == "bf16":
            raise RuntimeError("the process died")
        timed = {"Rev-MViT-B": 64, "MViT-B (revvideo)": 16}.get(name, 12)
        return dict(
            model=" + ".join((name, *levers)), depth=depth, dtype=dtype, fill_batch=fill_batch,
            timed_batch=fill_batch or timed, clips_per_s=1.0,
        )  # fmt: skip

    monkeypatch.setattr(budget, "in_fresh_process", fake_row)
    settings = _settings("--budget-dtypes", "fp32", "bf16", "--budget-levers", "fill", "store")
    settings.budget_depths = []
    rows = {(row["model"], row["dtype"]): row for row in budget.run_budget(settings, None)["rows"]}
    assert rows["Rev-MViT-B + fill", "fp32"]["fill_batch"] == 16
    assert rows["Rev-MViT-B + store", "fp32"]["fill_batch"] is None
    # Without MViT-B's figures there is no batch to fill at: that row says so.
    assert "MViT-B (revvideo), which has none" in rows["Rev-MViT-B + fill", "bf16"]["error"]

    settings.budget_fill_batch = 40
    rows = budget.run_budget(settings, None)["rows"]
    assert [row["fill_batch"] for row in rows if "fill" in row["model"]] == [40, 40]


class _FillRun(budget.BudgetRun):
    """BudgetRun's fill logic on the CPU: a tiny Rev-MViT whose steps run out of memory above
    `fits` stored layers (and the timed steps, repeated, above `fits_timed`)."""

    def __init__(self, fits: int, fits_timed: int) -> None:
        self.model = tiny_rev_mvit()
        self.fits, self.fits_timed = fits, fits_timed
        self.step = type("Step", (), {"release": lambda self: None})()
        self.figures = {}

    def _check(self, limit: int) -> None:
        if len(self.model.rev_backbone.stored_layers) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    def trial(self, batch: int) -> None:
        self._check(self.fits)

    def measure(self, batch: int) -> None:
        self._check(self.fits_timed)
        self.figures = dict(timed_batch=batch, clips_per_s=10.0)


@pytest.mark.parametrize(("fits", "fits_timed", "stored"), [(3, 3, "3/5"), (3, 1, "1/5")])
def test_the_fill_row_times_the_most_stored_layers_that_keep_fitting(fits, fits_timed, stored):
    run = _FillRun(fits, fits_timed)
    row = run._filled_row(12)
    assert row["largest_batch"] == row["timed_batch"] == 12
    assert row["stored_layers"] == stored
    count = int(stored.split("/")[0])
    assert run.model.rev_backbone.stored_layers == {4, 3, 2, 1, 0} - set(range(5 - count))


def test_a_fill_batch_that_does_not_fit_at_all_is_an_error_not_a_row():
    with pytest.raises(RuntimeError, match="a batch of 12 does not fit even with no layer stored"):
        _FillRun(fits=3, fits_timed=-1)._filled_row(12)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--budget-levers", "store+fill"], "store and fill choose the stored layers each"),
        (["--budget-fill-batch", "0"], "expected a positive integer, got '0'"),
    ],
)
def test_fill_mistakes_are_one_line_option_errors(options, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(options)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_the_json_holds_the_rows_measured_so_far_after_each_row(monkeypatch, tmp_path):
    path = tmp_path / "budget.json"
    held = []  # the rows in the file as each row starts

    def fake_row(row_function, settings, device, name, depth, dtype, levers, fill_batch):
        held.append(json.loads(path.read_text())["budget"]["rows"] if path.exists() else None)
        if name == "mvit_v1_b (torchvision)":
            raise RuntimeError("the process died")
        clips_per_s = 20.0 if name == budget.BUDGET_REFERENCE else 30.0
        return dict(
            model=" + ".join((name, *levers)), depth=depth, dtype=dtype, largest_batch=8,
            timed_batch=8, clips_per_s=clips_per_s, peak_gib=1.0, reserved_gib=1.5, card="a card",
        )  # fmt: skip

    monkeypatch.setattr(budget, "in_fresh_process", fake_row)
    monkeypatch.setattr(revvideo.benchmark, "_has_cuda", lambda device, section: True)
    settings = _settings(
        "--device", "cuda", "--budget-dtypes", "fp32", "--budget-depths",
        "--budget-levers", "overlap", "--json", str(path),
    )  # fmt: skip
    result = revvideo.benchmark.run(settings)

    # The end of the run writes what it always wrote, and only that file is left.
    figures = dict(settings=asdict(settings) | {"json": None}, budget=result["budget"])
    assert path.read_text() == json.dumps(figures, indent=2)
    assert [file.name for file in tmp_path.iterdir()] == ["budget.json"]
    rows = json.loads(path.read_text())["budget"]["rows"]
    assert [row["model"] for row in rows] == [
        "Rev-MViT-B", "MViT-B (revvideo)", "mvit_v1_b (torchvision)", "Rev-MViT-B + overlap",
    ]  # fmt: skip
    assert rows[0]["x_reference"] == 1.5 and "the process died" in rows[2]["error"]
    # Before each row, the file held every row before it: Rev-MViT-B's speed against MViT-B's
    # once that was timed.
    assert held[0] is None
    assert held[1] == [{key: value for key, value in rows[0].items() if key != "x_reference"}]
    assert held[2:] == [rows[:2], rows[:3]]
