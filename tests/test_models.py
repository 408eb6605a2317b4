"""Model builders, the registry and the reference architectures' sizes."""

from pathlib import Path

import pytest
import torch
from tiny_models import TINY_MVIT, tiny_mvit, tiny_rev_mvit, tiny_rev_vit

from revvideo.config import ConfigError, load_config
from revvideo.models import build_model, mvit_b_16x4, rev_mvit_b_16x4, rev_vit_b, rev_vit_s
from revvideo.utils.complexity import count_gflops, count_parameters

ROOT = Path(__file__).resolve().parents[1]
# The state-dict manifests of PySlowFast's released checkpoints: in the shared/ folder beside
# this checkout (CI lays a copy there), else in the workplace's own.
REFERENCE = next(
    folder
    for folder in (
        Path(__file__).resolve().parents[2] / "shared" / "reference",
        Path("/work/shared/reference"),
    )
    if folder.is_dir()
)


def _manifest(name: str) -> dict[str, list[int]]:
    lines = (REFERENCE / name).read_text().strip().splitlines()[1:]
    return {key: eval(shape) for key, shape in (line.split("\t") for line in lines)}


def _shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize(
    ("config", "builder", "params", "gflops", "manifest"),
    [
        (
            "REV_MVIT_B_16x4.yaml",
            rev_mvit_b_16x4,
            34_963_120,
            63.85,
            "pyslowfast_rev_mvit_b_16x4_state_dict.tsv",
        ),
        (
            "MVIT_B_16x4.yaml",
            mvit_b_16x4,
            36_610_672,
            70.80,
            "pyslowfast_mvit_b_16x4_state_dict.tsv",
        ),
    ],
    ids=["rev-mvit-b", "mvit-b"],
)
def test_reference_architectures(config, builder, params, gflops, manifest):
    model = build_model(load_config(ROOT / "configs" / "kinetics" / config))
    assert count_parameters(model) == params
    assert count_gflops(model, (1, 3, 16, 224, 224)) == pytest.approx(gflops, rel=0.01)
    assert _shapes(model) == _manifest(manifest)
    assert _shapes(builder()) == _shapes(model)


@pytest.mark.parametrize(
    ("config", "builder"),
    [("REV_VIT_B_16x4.yaml", rev_vit_b), ("REV_VIT_S_16x4.yaml", rev_vit_s)],
)
def test_rev_vit_configs_match_builders(config, builder):
    model = build_model(load_config(ROOT / "configs" / "kinetics" / config))
    reference = builder()
    assert _shapes(model) == _shapes(reference)
    assert not any(name.startswith("rev_backbone.layers.0.F.attn.pool") for name in _shapes(model))


@pytest.mark.parametrize(
    "build",
    [tiny_rev_mvit, tiny_mvit, tiny_rev_vit, lambda **kw: tiny_mvit(cls_token=False, **kw)],
    ids=["rev-mvit", "mvit", "rev-vit", "mvit-no-cls"],
)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_clips_to_logits(build, mode):
    model = build(num_classes=5).train(mode == "train")
    logits = model(torch.randn(2, 3, 4, 32, 32))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "arguments",
    [
        dict(num_frames=8, crop_size=64),
        dict(num_frames=2, crop_size=48, embed_dim=24, num_heads=2),
        dict(
            depth=9,
            dim_mul=((1, 2.0), (6, 2.0)),
            head_mul=((1, 2.0), (6, 2.0)),
            pool_q_stride=((1, 1, 2, 2), (6, 1, 2, 2)),
            transition_layers=(1, 6),
        ),
        dict(pool_mode="max", res_path="max"),
        dict(pool_mode="avg", pre_q_fusion="concat", respath_fuse="avg"),
        dict(pool_kv_stride_adaptive=None, pool_kv_stride=((0, 1, 2, 2), (2, 1, 2, 2))),
        dict(sep_pos_embed=False, qkv_bias=True, separate_qkv=True),
    ],
    ids=["8x64", "2x48-wide", "depth9", "max-pool", "avg-concat", "explicit-kv", "joint-pos"],
)
def test_any_geometry_the_config_allows_builds_and_trains_exactly(arguments):
    torch.manual_seed(0)
    model = tiny_rev_mvit(num_classes=3, **arguments).double().train()
    frames, size = arguments.get("num_frames", 4), arguments.get("crop_size", 32)
    clip = torch.randn(2, 3, frames, size, size, dtype=torch.float64)

    # The reversible backward, which recomputes the activations, gives autograd's gradients.
    gradients = {}
    for custom_backward in (False, True):
        model.rev_backbone.custom_backward = custom_backward
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        logits = model(clip)
        logits.square().sum().backward()
        gradients[custom_backward] = {name: p.grad for name, p in model.named_parameters()}
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    for name, plain in gradients[False].items():
        assert torch.allclose(gradients[True][name], plain, rtol=1e-7, atol=1e-12), name
    # Each clip is classified on its own: the other clips of a batch change nothing.
    model.eval()
    batch = model(clip)
    assert torch.allclose(model(clip[1:]), batch[1:], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(batch[0], batch[1])


def test_images_as_single_frames():
    model = rev_vit_s(10, num_frames=1, crop_size=32, depth=2).eval()
    images = torch.randn(2, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (2, 10)
    # An image is read as the one-frame clip it is.
    assert torch.equal(logits, model(images.unsqueeze(2)))


def test_other_input_sizes_resize_the_position_embedding():
    model = tiny_rev_mvit(num_classes=4).eval()
    assert model(torch.randn(1, 3, 8, 48, 48)).shape == (1, 4)


def test_pooling_layers_must_be_stage_transitions():
    with pytest.raises(ValueError, match="layer 3 pools Q"):
        rev_mvit_b_16x4(**TINY_MVIT, transition_layers=(1,))


@pytest.mark.parametrize(
    ("builder", "arguments", "message"),
    [
        (
            rev_mvit_b_16x4,
            dict(transition_layers=(1, 3, 16)),
            r"^transition_layers names layer 16, but the model has layers 0 to 15 \(depth 16\)$",
        ),
        (
            rev_mvit_b_16x4,
            dict(respath_fuse="add"),
            r"^respath_fuse must be one of concat, avg, got 'add'$",
        ),
        (
            rev_vit_s,
            dict(res_path="avg"),
            r"^res_path must be one of conv, max, got 'avg'$",
        ),
        (
            mvit_b_16x4,
            dict(num_heads=5),
            r"^embed_dim 96 must be a multiple of num_heads 5$",
        ),
        (
            mvit_b_16x4,
            dict(head_mul=((0, 5.0),)),
            r"^layer 0's attention is 96 channels wide, not a multiple of its 5 heads",
        ),
        (mvit_b_16x4, dict(dim_mul=((16, 2.0),)), r"^dim_mul names layer 16"),
        (
            mvit_b_16x4,
            dict(patch_stride=(4, 4)),
            r"^patch_stride must be \(T, H, W\), got \[4, 4\]$",
        ),
        (
            mvit_b_16x4,
            dict(pool_mode="mean"),
            r"^pool_mode must be one of conv, avg, max, got 'mean'$",
        ),
    ],
    ids=[
        "transition-layer",
        "final-fusion",
        "residual-path",
        "embed-heads",
        "layer-heads",
        "layer-index",
        "patch",
        "pooling",
    ],
)
def test_builders_check_their_arguments_naming_them(builder, arguments, message):
    # The typed builders are used without a config: the models check their own arguments and
    # name them (build_model names the config keys instead).
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        builder(**arguments)


def test_build_model_user_errors_are_config_errors():
    cfg = load_config(ROOT / "configs" / "kinetics" / "REV_MVIT_B_16x4.yaml")
    cfg.MODEL.MODEL_NAME = "ResNet"
    with pytest.raises(ConfigError, match=r"unknown MODEL\.MODEL_NAME 'ResNet'"):
        build_model(cfg)
    # In config terms, before any weight is made.
    with pytest.raises(ConfigError, match="class token"):
        build_model(
            load_config(
                ROOT / "configs" / "kinetics" / "REV_MVIT_B_16x4.yaml",
                ["MVIT.CLS_EMBED_ON", "True"],
            )
        )
    with pytest.raises(ConfigError, match=r"layer 14 pools Q .* MVIT\.REV\.BUFFER_LAYERS$"):
        build_model(
            load_config(
                ROOT / "configs" / "kinetics" / "REV_MVIT_B_16x4.yaml",
                ["MVIT.REV.BUFFER_LAYERS", "[1, 3]"],
            )
        )
