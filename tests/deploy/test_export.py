"""Export to ONNX and .pt2: the metadata in the file, logits equal to the checkpoint's for any
batch size, and one-line errors that leave no file behind."""

import json
import shutil
import sys

import onnx
import pytest
import torch
from demo.conftest import CLASS_NAMES, tiny_image_cfg, train_tiny

import revvideo
from revvideo.checkpoint import model_entries, save_checkpoint
from revvideo.cli import export as export_cli
from revvideo.deploy import (
    Exported,
    ExportError,
    export_checkpoint,
    read_exported,
)
from revvideo.deploy import export as export_module
from revvideo.deploy.exported import METADATA_KEY
from revvideo.utils.errors import CheckpointError, UserError

from .conftest import TEMPERATURE

CPU = torch.device("cpu")
# Float32 logits from the same weights: onnxruntime's kernels differ from PyTorch's in the
# order of additions only.
TOLERANCE = 1e-4


def clips(cfg, batch, seed):
    data = cfg.DATA
    shape = (batch, 3, data.NUM_FRAMES, data.TEST_CROP_SIZE, data.TEST_CROP_SIZE)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def files_in(folder):
    return sorted(path.name for path in folder.iterdir())


def test_the_metadata_describes_the_checkpoint(exported, checkpoint):
    path, cfg, _ = checkpoint
    metadata = exported.metadata
    assert metadata.class_names == CLASS_NAMES
    assert (metadata.mean, metadata.std) == (list(cfg.DATA.MEAN), list(cfg.DATA.STD))
    assert (metadata.num_frames, metadata.sampling_rate, metadata.target_fps) == (4, 2, 15)
    assert metadata.crop_size == 32
    assert metadata.views == (3, 1)
    assert metadata.ensemble_method == "sum"
    assert metadata.temperature == TEMPERATURE
    assert metadata.source == str(path)
    assert metadata.version == revvideo.__version__
    assert read_exported(exported.path, CPU).metadata == metadata
    assert files_in(exported.path.parent) == [exported.path.name]  # no partial file left


def test_the_metadata_is_in_the_file_for_any_reader(exported):
    if exported.path.suffix == ".onnx":
        props = {p.key: p.value for p in onnx.load(exported.path).metadata_props}
        text = props[METADATA_KEY]
    else:
        extra = {METADATA_KEY: ""}
        torch.export.load(exported.path, extra_files=extra)
        text = extra[METADATA_KEY]
    assert json.loads(text)["class_names"] == CLASS_NAMES


@pytest.mark.parametrize("batch", [1, 3])
def test_the_exported_logits_are_the_checkpoints_for_any_batch(exported, checkpoint, batch):
    _, cfg, model = checkpoint
    assert exported.difference <= TOLERANCE
    clip = clips(cfg, batch, seed=batch)
    with torch.inference_mode():
        expected = model(clip)
        logits = read_exported(exported.path, CPU).model(clip)
    assert expected.shape == logits.shape == (batch, len(CLASS_NAMES))
    assert expected.abs().max() > 1  # a trained model: the tolerance is small beside its logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("exported", [".pt2"], indirect=True)
def test_a_pt2_export_runs_on_the_device_it_is_read_for(exported, checkpoint):
    meta = torch.device("meta")  # a device other than the CPU that every machine has
    logits = read_exported(exported.path, meta).model(clips(checkpoint[1], 3, seed=3).to(meta))
    assert (logits.device, logits.shape) == (meta, (3, len(CLASS_NAMES)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_an_export_read_for_a_gpu_answers_there(exported, checkpoint, monkeypatch):
    # IEEE float32 on the GPU (no TF32), so that its logits compare with the CPU's.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    _, cfg, model = checkpoint
    clip = clips(cfg, 3, seed=4)
    with torch.inference_mode():
        expected = model(clip)
        logits = read_exported(exported.path, torch.device("cuda")).model(clip.cuda())
    assert logits.device.type == "cuda"
    torch.testing.assert_close(logits.cpu(), expected, rtol=0, atol=1e-3)


def test_an_image_model_exports_to_onnx(tmp_path):
    cfg = tiny_image_cfg()
    path = tmp_path / "image_model.pyth"
    model = train_tiny(cfg, steps=20)
    save_checkpoint(path, model, **model_entries(cfg, CLASS_NAMES, source="scratch"))
    report = export_checkpoint(path, tmp_path / "image_model.onnx")
    assert report.difference <= TOLERANCE
    assert (report.metadata.num_frames, report.metadata.temperature) == (1, None)


def test_the_command_prints_what_it_wrote_and_the_parity(checkpoint, tmp_path, capsys):
    run = checkpoint[0].parents[1]  # a run folder: its best model is exported
    output = tmp_path / "model.pt2"
    assert export_cli.main([str(run), str(output)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"wrote {output} in ")
    assert out[1].startswith("3 classes; clips of 4 frames every 2 at 15 fps, 32 px crops;")
    assert out[2].startswith("parity: largest logit difference ")
    assert out[2].endswith(" (tolerance 1e-03) on a random clip")
    assert float(out[2].split()[4]) <= TOLERANCE
    assert read_exported(output, CPU).metadata.class_names == CLASS_NAMES


def one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_an_unknown_suffix_is_one_line(checkpoint, tmp_path, capsys):
    assert export_cli.main([str(checkpoint[0]), str(tmp_path / "model.bin")]) == 2
    assert one_error_line(capsys).endswith("must end in .onnx or .pt2")
    assert files_in(tmp_path) == []


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert export_cli.main([str(tmp_path / "missing.pyth"), str(tmp_path / "model.onnx")]) == 2
    assert "missing.pyth does not exist" in one_error_line(capsys)


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_a_model_that_does_not_export_is_one_line_and_no_file(
    checkpoint, tmp_path, capsys, monkeypatch, suffix
):
    def fail(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression u0 < 3\n\nmore detail")

    monkeypatch.setattr(torch.export, "export", fail)
    assert export_cli.main([str(checkpoint[0]), str(tmp_path / f"model{suffix}")]) == 2
    line = one_error_line(capsys)
    assert line.endswith("does not export: Could not guard on data-dependent expression u0 < 3")
    assert files_in(tmp_path) == []


def test_a_model_that_does_not_translate_to_onnx_is_one_line(checkpoint, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise torch.onnx.errors.OnnxExporterError("no ONNX function for aten::foo\nmore")

    monkeypatch.setattr(torch.onnx, "export", fail)
    with pytest.raises(ExportError, match=r"does not export to ONNX: no ONNX function for \S+$"):
        export_checkpoint(checkpoint[0], tmp_path / "model.onnx")
    assert files_in(tmp_path) == []


def test_an_export_beyond_the_tolerance_is_not_kept(checkpoint, tmp_path, monkeypatch):
    destination = tmp_path / "model.pt2"
    destination.write_bytes(b"the previous export")

    def drifting(path, device):
        exported = read_exported(path, device)
        model = exported.model
        return Exported(lambda clip: model(clip) + 2e-3, exported.metadata)

    monkeypatch.setattr(export_module, "read_exported", drifting)
    with pytest.raises(ExportError, match=r"differ from .* by 2\.00e-03 \(tolerance 1e-03\)"):
        export_checkpoint(checkpoint[0], destination)
    assert files_in(tmp_path) == ["model.pt2"]
    assert destination.read_bytes() == b"the previous export"


@pytest.mark.parametrize("missing", ["onnxscript", "onnxruntime"])
def test_onnx_without_the_deploy_extra_says_how_to_install_it(
    checkpoint, tmp_path, monkeypatch, missing
):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` raises ImportError
    with pytest.raises(
        UserError, match=r"^ONNX export needs the deploy extra: pip install 'revvideo\[deploy\]'$"
    ):
        export_checkpoint(checkpoint[0], tmp_path / "model.onnx")
    assert files_in(tmp_path) == []


def test_running_onnx_without_the_deploy_extra_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(UserError, match=r"^running an ONNX model needs the deploy extra: pip "):
        read_exported(tmp_path / "model.onnx", CPU)


def without_metadata(exported, path):
    """A copy of `exported`'s file at `path` without revvideo's metadata."""
    if exported.path.suffix == ".onnx":
        model = onnx.load(exported.path)
        del model.metadata_props[:]
        onnx.save(model, path)
    else:
        program = torch.export.load(exported.path)
        torch.export.save(program, path)


def with_metadata(exported, path, text):
    """A copy of `exported`'s file at `path` whose revvideo metadata is `text`."""
    if exported.path.suffix == ".onnx":
        model = onnx.load(exported.path)
        onnx.helper.set_model_props(model, {METADATA_KEY: text})
        onnx.save(model, path)
    else:
        torch.export.save(torch.export.load(exported.path), path, extra_files={METADATA_KEY: text})


def test_a_file_that_is_not_a_revvideo_export_is_one_line(exported, checkpoint, tmp_path):
    suffix = exported.path.suffix
    text_file = tmp_path / f"notes{suffix}"
    text_file.write_text("not a model\n")
    torch_save = tmp_path / f"checkpoint{suffix}"
    shutil.copy(checkpoint[0], torch_save)  # a zip archive too, for .pt2
    bare = tmp_path / f"bare{suffix}"
    without_metadata(exported, bare)
    broken, partial = tmp_path / f"broken{suffix}", tmp_path / f"partial{suffix}"
    with_metadata(exported, broken, "{not json")
    with_metadata(exported, partial, json.dumps({"class_names": CLASS_NAMES}))
    kind = "an ONNX model" if suffix == ".onnx" else "a torch.export archive"
    cases = {
        text_file: f"{text_file} is not {kind}",
        torch_save: f"{torch_save} is not {kind}",
        bare: f"{bare}: {kind} without revvideo's metadata",
        broken: f"{broken}: its revvideo metadata is not a JSON object",
        partial: f"{partial}: its revvideo metadata lacks mean, std, num_frames,",
        tmp_path / f"missing{suffix}": f"exported model {tmp_path / f'missing{suffix}'} does not",
        checkpoint[0]: f"{checkpoint[0]}: an exported model ends in .onnx or .pt2",
    }
    for path, message in cases.items():
        with pytest.raises(CheckpointError) as caught:
            read_exported(path, CPU)
        assert str(caught.value).startswith(message)
        assert "\n" not in str(caught.value)
