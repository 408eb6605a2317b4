"""tools/convert_checkpoint.py: PySlowFast and torchvision files to revvideo's layout and back."""

import pytest
import torch
from test_checkpoint import TINY, randomize, tiny_torchvision_mvit

from revvideo.checkpoint import read_checkpoint, save_checkpoint, stored_config
from revvideo.cli import _conversion as conversion
from revvideo.cli._conversion import ConversionMismatch, convert, torchvision_twin
from revvideo.config import get_cfg
from revvideo.models import MViT, build_model

from .conftest import ROOT, run_tool, tiny_cfg


def tiny_mvit_cfg():
    """The config of test_checkpoint's tiny MViT (and of its hand-built torchvision twin)."""
    cfg = get_cfg()
    cfg.MODEL.NUM_CLASSES = 5
    cfg.DATA.NUM_FRAMES, cfg.DATA.TRAIN_CROP_SIZE = TINY["num_frames"], TINY["crop_size"]
    cfg.MVIT.CLS_EMBED_ON = True
    cfg.MVIT.SEP_POS_EMBED = True
    cfg.MVIT.EMBED_DIM, cfg.MVIT.DEPTH = TINY["embed_dim"], TINY["depth"]
    cfg.MVIT.PATCH_PADDING = [1, 3, 3]
    cfg.MVIT.DIM_MUL = [list(pair) for pair in TINY["dim_mul"]]
    cfg.MVIT.HEAD_MUL = [list(pair) for pair in TINY["head_mul"]]
    cfg.MVIT.POOL_Q_STRIDE = [list(stride) for stride in TINY["pool_q_stride"]]
    cfg.MVIT.POOL_KV_STRIDE_ADAPTIVE = list(TINY["pool_kv_stride_adaptive"])
    cfg.MVIT.POOL_KVQ_KERNEL = [3, 3, 3]
    return cfg


def write_cfg(cfg, path):
    path.write_text(cfg.dump())
    return str(path)


def clip():
    return torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))


def test_tiny_config_builds_the_tiny_mvit():
    built, reference = build_model(tiny_mvit_cfg()), MViT(5, **TINY)
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def test_pyslowfast_to_revvideo_and_back_keeps_every_tensor(tmp_path, capsys):
    cfg = tiny_cfg()
    state = randomize(build_model(cfg)).state_dict()
    pyslowfast = {
        "model_state": state,
        "epoch": 200,
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 1e-5}]},
        "cfg": "TRAIN:\n  DATASET: kinetics\nNUM_GPUS: 8\n",  # PySlowFast's own config
    }
    torch.save(pyslowfast, tmp_path / "released.pyth")

    cfg_file = write_cfg(cfg, tmp_path / "c.yaml")
    assert (
        convert(str(tmp_path / "released.pyth"), tmp_path / "ours.pyth", cfg_file, "revvideo") == 0
    )
    run = run_tool(
        "tools/convert_checkpoint.py",
        tmp_path / "ours.pyth",
        tmp_path / "back.pyth",
        "--to",
        "pyslowfast",
    )
    assert run.returncode == 0, run.stderr

    ours = read_checkpoint(tmp_path / "ours.pyth")
    assert sorted(ours) == ["cfg", "class_names", "epoch", "model_state", "provenance"]
    assert stored_config(ours, "ours.pyth") == cfg
    assert ours["class_names"] == ["class_0", "class_1", "class_2"] and ours["epoch"] == 200
    assert ours["provenance"] == {
        "source": f"converted from {tmp_path / 'released.pyth'}",
        "epoch": 200,
        "step": 0,
    }
    back = torch.load(tmp_path / "back.pyth", weights_only=True)
    assert sorted(back) == ["epoch", "model_state"] and back["epoch"] == 200
    assert back["model_state"].keys() == state.keys()
    assert all(torch.equal(back["model_state"][key], value) for key, value in state.items())
    assert run.stdout.splitlines()[-1] == (
        f"wrote {tmp_path / 'back.pyth'} (pyslowfast layout); logits equal to the source's on a "
        "random clip (largest relative difference 0.0e+00)"
    )


def test_torchvision_to_revvideo_gives_the_same_logits(tmp_path):
    torchvision_model = randomize(tiny_torchvision_mvit())
    torch.save(torchvision_model.state_dict(), tmp_path / "mvit_v1_b.pth")

    difference = convert(
        str(tmp_path / "mvit_v1_b.pth"),
        tmp_path / "ours.pyth",
        write_cfg(tiny_mvit_cfg(), tmp_path / "c.yaml"),
        "revvideo",
    )

    assert difference <= 1e-5
    ours = build_model(stored_config(read_checkpoint(tmp_path / "ours.pyth"), "ours"))
    ours.load_state_dict(read_checkpoint(tmp_path / "ours.pyth")["model_state"])
    with torch.no_grad():
        torch.testing.assert_close(
            ours.eval()(clip()), torchvision_model(clip()), rtol=0, atol=1e-5
        )


def test_torchvision_twin_matches_the_hand_built_torchvision_model():
    twin, hand_built = torchvision_twin(tiny_mvit_cfg()), tiny_torchvision_mvit()
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in hand_built.state_dict().items()
    }
    twin.load_state_dict(randomize(hand_built).state_dict())
    with torch.no_grad():
        assert torch.equal(twin.eval()(clip()), hand_built(clip()))


def test_a_conversion_that_changes_the_outputs_is_refused(tmp_path, monkeypatch, capsys):
    cfg = tiny_cfg()
    save_checkpoint(tmp_path / "source.pyth", randomize(build_model(cfg)), cfg=cfg.dump())

    def save_damaged(path, model, **entries):
        with torch.no_grad():
            model.head.projection.bias.add_(1.0)
        save_checkpoint(path, model, **entries)

    monkeypatch.setattr(conversion, "save_checkpoint", save_damaged)

    with pytest.raises(ConversionMismatch, match=r"^the converted model's logits differ from the "):
        convert(str(tmp_path / "source.pyth"), tmp_path / "out.pyth", None, "revvideo")
    assert not (tmp_path / "out.pyth").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["absent.pyth", "out.pyth"], "error: checkpoint absent.pyth does not exist"),
        (
            ["source.pyth", "source.pyth"],
            "error: the output source.pyth is the source; name another file",
        ),
        (
            ["bare.pyth", "out.pyth"],
            "error: bare.pyth holds no revvideo config; pass the YAML config that describes its "
            "model with --cfg",
        ),
    ],
)
def test_bad_sources_are_one_error_line(tmp_path, arguments, message):
    cfg = tiny_cfg()
    save_checkpoint(tmp_path / "source.pyth", build_model(cfg), cfg=cfg.dump())
    torch.save(build_model(cfg).state_dict(), tmp_path / "bare.pyth")

    run = run_tool("tools/convert_checkpoint.py", *arguments, cwd=tmp_path)

    assert run.returncode == 2
    assert run.stderr.splitlines() == [message]


def test_command_line_error_without_traceback(tmp_path):
    (tmp_path / "garbage.pyth").write_text("this is not a checkpoint\n")

    run = run_tool("tools/convert_checkpoint.py", tmp_path / "garbage.pyth", tmp_path / "out.pyth")

    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        f"error: {tmp_path / 'garbage.pyth'} is not a PyTorch checkpoint, or it is corrupt or truncated"
    ]


def test_the_tool_offers_the_layouts_the_package_writes():
    tool_text = (ROOT / "revvideo" / "cli" / "convert_checkpoint.py").read_text()
    targets = ", ".join(f'"{target}"' for target in conversion.TARGETS)
    assert f"TARGETS = ({targets})" in tool_text
