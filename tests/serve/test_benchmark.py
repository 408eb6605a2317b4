"""tools/benchmark.py --section deploy: the service's rows and both runtimes' (figures only
checked for sense: speed is what the benchmark reports, not what a test asserts)."""

from revvideo.benchmark import Settings, run
from revvideo.cli.benchmark import build_parser


def test_the_deploy_section_times_the_service_and_both_runtimes(capsys):
    options = ["--section", "deploy", "--device", "cpu", "--repeats", "1"]
    options += ["--deploy-clients", "1", "2", "--deploy-requests", "2"]
    result = run(Settings(**vars(build_parser().parse_args(options))))["deploy"]
    assert [(row["clients"], row["requests"]) for row in result["server"]] == [(1, 2), (2, 4)]
    for row in result["server"]:
        assert row["requests_per_s"] > 0 and 0 < row["median_s"] <= row["p90_s"]
    eager, onnx = result["runtimes"]
    assert (eager["runtime"], onnx["runtime"]) == ("eager PyTorch", "onnxruntime")
    assert eager["clips_per_s"] > 0 and onnx["clips_per_s"] > 0
    assert onnx["export_difference"] <= 1e-3
    printed = capsys.readouterr().out
    assert "requests/s" in printed and "x eager" in printed
