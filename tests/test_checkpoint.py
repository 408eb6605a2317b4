"""Checkpoints: our own round trip, PySlowFast `.pyth` files, torchvision MViT weights, bad files
and the atomic write."""

import builtins
import dataclasses
import logging
import subprocess
from pathlib import Path

import pytest
import torch
from test_models import REFERENCE
from torch import nn
from torchvision.models.video import mvit as tv_mvit

from revvideo.checkpoint import (
    add_entries,
    checkpoint_file,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from revvideo.models import MViT, RevMViT, mvit_b_16x4, rev_mvit_b_16x4
from revvideo.utils.errors import CheckpointError

# A 4-layer MViT on 4 x 32 x 32 clips (2 x 8 x 8 tokens): widths 16 -> 32 -> 64, Q pooling at
# layers 1 and 3, KV pooling starting at (1, 4, 4).
TINY = dict(
    num_frames=4,
    crop_size=32,
    embed_dim=16,
    depth=4,
    dim_mul=((1, 2.0), (3, 2.0)),
    head_mul=((1, 2.0), (3, 2.0)),
    pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
    pool_kv_stride_adaptive=(1, 4, 4),
)


def tiny_mvit(num_classes: int = 5, **kwargs) -> MViT:
    return MViT(num_classes, **{**TINY, **kwargs}).eval()


def tiny_rev_mvit(num_classes: int = 5) -> RevMViT:
    return RevMViT(num_classes, **TINY, transition_layers=(1, 3)).eval()


def tiny_torchvision_mvit(num_classes: int = 5) -> tv_mvit.MViT:
    """torchvision's MViT v1 with the geometry of `tiny_mvit`, written out by hand."""
    layers = [  # heads, width in, width out, Q stride, KV stride
        (1, 16, 32, [], [1, 4, 4]),
        (2, 32, 32, [1, 2, 2], [1, 2, 2]),
        (2, 32, 64, [], [1, 2, 2]),
        (4, 64, 64, [1, 2, 2], [1, 1, 1]),
    ]
    blocks = [
        tv_mvit.MSBlockConfig(
            num_heads=heads,
            input_channels=dim_in,
            output_channels=dim_out,
            kernel_q=[3, 3, 3] if stride_q else [],
            kernel_kv=[3, 3, 3],
            stride_q=stride_q,
            stride_kv=stride_kv,
        )
        for heads, dim_in, dim_out, stride_q, stride_kv in layers
    ]
    return tv_mvit.MViT(
        spatial_size=(32, 32),
        temporal_size=4,
        block_setting=blocks,
        residual_pool=False,
        residual_with_cls_embed=False,
        rel_pos_embed=False,
        proj_after_attn=False,
        num_classes=num_classes,
    ).eval()


def randomize(model: nn.Module) -> nn.Module:
    """Gives every parameter distinct random values, so that swapping any two same-shaped
    tensors (say norm_k and norm_v, which start out identical) changes the output."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param), alpha=0.05)
    return model


def manifest_state(name: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the names and shapes of a released PySlowFast checkpoint."""
    lines = (REFERENCE / f"pyslowfast_{name}_state_dict.tsv").read_text().splitlines()[1:]
    state = {}
    for line in lines:
        key, shape = line.split("\t")
        state[key] = torch.randn([int(n) for n in shape.strip("[]").split(",")])
    return state


def clip(frames: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(0))


# --- our own checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("build", [tiny_mvit, tiny_rev_mvit])
def test_round_trip_gives_the_same_outputs(tmp_path, build):
    source, target = randomize(build()), build()
    save_checkpoint(tmp_path / "checkpoint.pyth", source, epoch=3, cfg="MODEL:\n  NUM_CLASSES: 5\n")

    others = load_checkpoint(tmp_path / "checkpoint.pyth", target)

    assert others == {"epoch": 3, "cfg": "MODEL:\n  NUM_CLASSES: 5\n"}
    with torch.no_grad():
        torch.testing.assert_close(target(clip()), source(clip()), rtol=0, atol=0)


def test_data_parallel_wrappers_are_neither_saved_nor_needed(tmp_path):
    source, target = randomize(tiny_mvit()), tiny_mvit()
    save_checkpoint(tmp_path / "unwrapped.pyth", nn.DataParallel(source))
    torch.save({"model_state": nn.DataParallel(source).state_dict()}, tmp_path / "prefixed.pyth")

    assert not any(
        k.startswith("module.") for k in read_checkpoint(tmp_path / "unwrapped.pyth")["model_state"]
    )
    load_checkpoint(tmp_path / "prefixed.pyth", target)
    load_checkpoint(tmp_path / "unwrapped.pyth", nn.DataParallel(target))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


@pytest.mark.parametrize("layout", ["model", "state_dict", "bare"])
def test_common_layouts_load(tmp_path, layout):
    source, target = randomize(tiny_mvit()), tiny_mvit()
    state = source.state_dict()
    torch.save(state if layout == "bare" else {layout: state, "step": 7}, tmp_path / "c.pth")

    others = load_checkpoint(tmp_path / "c.pth", target)

    assert others == ({} if layout == "bare" else {"step": 7})
    for key, value in state.items():
        assert torch.equal(target.state_dict()[key], value)


# --- PySlowFast's released checkpoints -------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "build"), [("rev_mvit_b_16x4", rev_mvit_b_16x4), ("mvit_b_16x4", mvit_b_16x4)]
)
def test_pyslowfast_checkpoint_loads_every_tensor(tmp_path, manifest, build):
    state = manifest_state(manifest)
    optimizer_state = {"state": {}, "param_groups": [{"lr": 1.6e-5, "betas": (0.9, 0.999)}]}
    torch.save(
        {"epoch": 200, "model_state": state, "optimizer_state": optimizer_state, "cfg": "{}"},
        tmp_path / "released.pyth",
    )
    model = build()

    others = load_checkpoint(tmp_path / "released.pyth", model)

    assert others == {"epoch": 200, "optimizer_state": optimizer_state, "cfg": "{}"}
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# --- torchvision's MViT ----------------------------------------------------------------------


def test_torchvision_mvit_weights_give_the_same_logits(tmp_path):
    torchvision_model, ours = randomize(tiny_torchvision_mvit()), tiny_mvit()
    torch.save(torchvision_model.state_dict(), tmp_path / "mvit_v1_b.pth")

    assert load_checkpoint(tmp_path / "mvit_v1_b.pth", ours) == {}
    with torch.no_grad():
        torch.testing.assert_close(ours(clip()), torchvision_model(clip()), rtol=0, atol=1e-5)


def test_torchvision_mvit_v1_b_matches_mvit_b_16x4(tmp_path):
    torch.manual_seed(0)
    # Default initialisation: the tiny tests above check that no two tensors are swapped.
    torchvision_model, ours = tv_mvit.mvit_v1_b().eval(), mvit_b_16x4().eval()
    torch.save(torchvision_model.state_dict(), tmp_path / "mvit_v1_b.pth")
    load_checkpoint(tmp_path / "mvit_v1_b.pth", ours)

    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torchvision_model(x), rtol=0, atol=1e-5)


# --- bad files -------------------------------------------------------------------------------


@dataclasses.dataclass
class Opaque:
    """A class the weights-only unpickler refuses: loading it would import and run our code."""

    value: int = 0


def write_garbage(path: Path) -> None:
    path.write_text("this is not a checkpoint\n")


def write_empty(path: Path) -> None:
    path.write_bytes(b"")


def write_truncated(path: Path) -> None:
    torch.save({"model_state": tiny_mvit().state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def write_objects(path: Path) -> None:
    torch.save({"model_state": tiny_mvit().state_dict(), "extra": Opaque()}, path)


def write_no_state(path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, path)


def write_list(path: Path) -> None:
    torch.save([torch.ones(3)], path)


def write_non_tensor_state(path: Path) -> None:
    torch.save({"model_state": {"head.projection.weight": [1.0, 2.0]}}, path)


def write_wrong_depth(path: Path) -> None:
    torch.save({"model_state": tiny_mvit(depth=5).state_dict()}, path)


def write_wrong_classes(path: Path) -> None:
    torch.save({"model_state": tiny_mvit(num_classes=7).state_dict()}, path)


def write_rev_mvit(path: Path) -> None:
    save_checkpoint(path, tiny_rev_mvit())


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, r"checkpoint .*missing\.pyth does not exist$"),
        (write_garbage, r"is not a PyTorch checkpoint, or it is corrupt or truncated$"),
        (write_empty, r"is not a PyTorch checkpoint, or it is corrupt or truncated$"),
        (write_truncated, r"is not a PyTorch checkpoint, or it is corrupt or truncated$"),
        (write_objects, r"holds arbitrary Python objects \(.*Opaque\); refusing to unpickle"),
        (write_no_state, r"holds no model weights: a dict with keys \[epoch, lr\]"),
        (write_list, r"holds a list, not a checkpoint$"),
        (write_non_tensor_state, r"holds a model state that is not a dict of tensors$"),
        (
            write_wrong_depth,
            r"does not fit MViT: 18 unexpected keys \(blocks\.4\.norm1\.weight, "
            r"blocks\.4\.norm1\.bias, blocks\.4\.attn\.qkv\.weight, \.\.\.\)$",
        ),
        (
            write_wrong_classes,
            r"does not fit MViT: head\.projection\.weight has shape \[7, 64\] in the "
            r"checkpoint but \[5, 64\] in the model$",
        ),
        (
            write_rev_mvit,
            r"does not fit MViT: \d+ missing keys \(cls_token, .*\); \d+ unexpected keys \(rev_backbone\.",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_bad_checkpoint_is_a_one_line_error(tmp_path, write, message):
    path = tmp_path / "missing.pyth"
    if write is not None:
        write(path)

    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path, tiny_mvit())

    assert "\n" not in str(error.value)
    assert str(path) in str(error.value)


# --- atomic writes ---------------------------------------------------------------------------


_real_save = torch.save


def failing_save(obj, file, *args, **kwargs):
    """torch.save onto a disk that fills after a few bytes; sizing a file in memory still works."""
    if not hasattr(file, "fileno"):
        return _real_save(obj, file, *args, **kwargs)
    file.write(b"half a checkpoint")
    raise OSError(28, "No space left on device")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pyth"
    save_checkpoint(path, tiny_mvit(), epoch=1)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save)

    with pytest.raises(
        CheckpointError,
        match=r"^cannot write .*checkpoint.pyth: the disk is full \(the file needs [\d.]+ MiB, "
        r"[\d.]+ MiB free\); .*checkpoint.pyth is unchanged$",
    ):
        save_checkpoint(path, tiny_mvit(), epoch=2)

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pyth"]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (a tmpfs; mounting needs root, as on CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_is_named_with_the_room_the_checkpoint_needs(tmp_path, small_disk):
    model = nn.Linear(1000, 1000)  # 3.8 MiB of weights, on a 1 MiB disk
    save_checkpoint(tmp_path / "fits.pyth", model, epoch=1)
    needed = (tmp_path / "fits.pyth").stat().st_size / 2**20

    with pytest.raises(CheckpointError) as error:
        save_checkpoint(small_disk / "run" / "x.pyth", model, epoch=1)

    assert str(error.value) == (
        f"cannot write {small_disk / 'run' / 'x.pyth'}: the disk is full (the file needs "
        f"{needed:.1f} MiB, 1.0 MiB free)"
    )
    assert list((small_disk / "run").iterdir()) == []


def test_failed_first_save_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", failing_save)

    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "run" / "checkpoint.pyth", tiny_mvit())

    assert list((tmp_path / "run").iterdir()) == []


def test_interrupted_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted_save(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "checkpoint.pyth", tiny_mvit())

    assert list(tmp_path.iterdir()) == []


def test_save_replaces_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pyth"
    save_checkpoint(path, tiny_mvit(), epoch=1)
    save_checkpoint(path, tiny_mvit(), epoch=2)

    assert read_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pyth"]


def test_a_read_only_destination_reports_the_write_error_not_the_cleanup(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(builtins, "open", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(CheckpointError, match=r"^cannot write .*x.pyth: Read-only file system$"):
        save_checkpoint(tmp_path / "x.pyth", tiny_mvit())


def test_entries_are_added_whole_and_the_weights_kept(tmp_path, monkeypatch):
    path = tmp_path / "best.pyth"
    model = tiny_mvit()
    save_checkpoint(path, model, epoch=1, temperature=1.0)
    add_entries(path, temperature=1.7)
    saved = read_checkpoint(path)
    assert (saved["epoch"], saved["temperature"]) == (1, 1.7)
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved["model_state"][name], tensor)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="is unchanged"):
        add_entries(path, temperature=3.0)
    assert read_checkpoint(path)["temperature"] == 1.7
    assert [p.name for p in tmp_path.iterdir()] == ["best.pyth"]


# --- a training run's folder -----------------------------------------------------------------


def test_a_run_folder_gives_its_best_model_else_its_last(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last, best = run / "checkpoints" / "last.pyth", run / "checkpoints" / "best.pyth"
    save_checkpoint(last, tiny_mvit())
    with caplog.at_level(logging.INFO, logger="revvideo.checkpoint.releases"):
        assert checkpoint_file(run, "--checkpoint") == last
        save_checkpoint(best, tiny_mvit())
        assert checkpoint_file(str(run), "TEST.CHECKPOINT_FILE_PATH") == best
        assert checkpoint_file(str(run), "TEST.CHECKPOINT_FILE_PATH") == best
    assert caplog.messages == [
        f"--checkpoint {run} is a training run: using {last}, its newest model",
        f"TEST.CHECKPOINT_FILE_PATH {run} is a training run: using {best}, its best on validation",
    ]


def test_a_folder_without_a_run_model_says_what_was_looked_for(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint_epoch_00001.pyth").write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        checkpoint_file(tmp_path, "TEST.CHECKPOINT_FILE_PATH")
    assert str(error.value) == (
        f"TEST.CHECKPOINT_FILE_PATH {tmp_path} is a folder without checkpoints/best.pyth or "
        "checkpoints/last.pyth: give a checkpoint file, or the OUTPUT_DIR of a training run"
    )
