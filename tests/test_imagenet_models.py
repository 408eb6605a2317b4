"""The paper's ImageNet models: Rev-ViT-S/B/L and the image Rev-MViT-B, built from
configs/imagenet with PySlowFast's parameter names, their released checkpoints, exact reversible
gradients and images given as (B, 3, H, W) or one-frame clips (B, 3, 1, H, W)."""

import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from gradient_checks import RANDOMNESS, assert_gradients_match, step
from test_models import _manifest, _shapes

import revvideo.models
from revvideo.checkpoint import RELEASES, load_checkpoint
from revvideo.checkpoint.releases import IMAGENET_1K
from revvideo.classes import imagenet1k_class_names
from revvideo.config import ConfigError, load_config
from revvideo.models import build_model, rev_mvit_b_imagenet, rev_vit_b, rev_vit_l, rev_vit_s
from revvideo.models.rev_mvit import StreamFusion
from revvideo.utils.complexity import count_parameters

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "imagenet"

# config, release, manifest, parameters in the model zoo (millions)
RELEASED = [
    ("REV_VIT_S.yaml", "rev_vit_s_in1k", "pyslowfast_rev_vit_s_imagenet_state_dict.tsv", 22),
    ("REV_VIT_B.yaml", "rev_vit_b_in1k", "pyslowfast_rev_vit_b_imagenet_state_dict.tsv", 87),
    ("REV_MVIT_B.yaml", "rev_mvit_b_in1k", "pyslowfast_rev_mvit_b_imagenet_state_dict.tsv", 39),
]
RELEASED_IDS = ["rev-vit-s", "rev-vit-b", "rev-mvit-b"]

# Tiny image models: 32 px images, 4 x 4 patch grids for Rev-ViT, three stages for Rev-MViT.
TINY_VIT = dict(
    num_frames=1, crop_size=32, patch_kernel=(8, 8), patch_stride=(8, 8), chunk_tokens=10
)
TINY_MVIT = dict(
    crop_size=32,
    embed_dim=16,
    depth=5,
    dim_mul=((1, 2.0), (3, 2.0)),
    head_mul=((1, 2.0), (3, 2.0)),
    pool_q_stride=((1, 1, 2, 2), (3, 1, 2, 2)),
    transition_layers=(1, 3),
    chunk_tokens=48,
)
TINY_IMAGE_MODELS = {
    "rev-vit-s": lambda **kw: rev_vit_s(7, **TINY_VIT, depth=3, **kw),
    "rev-vit-l": lambda **kw: rev_vit_l(7, **TINY_VIT, embed_dim=32, num_heads=4, depth=2, **kw),
    "rev-mvit-b": lambda **kw: rev_mvit_b_imagenet(7, **TINY_MVIT, **kw),
    "rev-mvit-b-fusion-dropout": lambda **kw: rev_mvit_b_imagenet(
        7, **TINY_MVIT, pre_q_fusion="concat_linear_2_0.3", **kw
    ),
}


def _manifest_state(manifest: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the names and shapes of a released PySlowFast checkpoint."""
    return {key: torch.randn(shape) for key, shape in _manifest(manifest).items()}


@pytest.mark.parametrize(("config", "release", "manifest", "millions"), RELEASED, ids=RELEASED_IDS)
def test_configs_build_the_released_architectures(config, release, manifest, millions):
    model = build_model(load_config(CONFIGS / config))

    expected = _manifest(manifest)
    assert _shapes(model) == expected
    assert count_parameters(model) == sum(math.prod(shape) for shape in expected.values())
    # The model zoo gives whole millions, cut off rather than rounded: the released checkpoints
    # hold 22.43, 87.34 and 39.69 million parameters.
    assert count_parameters(model) // 10**6 == millions
    builder = getattr(revvideo.models, RELEASES[release].builder)
    assert _shapes(builder(1000, num_frames=1)) == expected


@pytest.mark.parametrize(
    ("config", "builder", "vit", "width"),
    [
        ("REV_VIT_B.yaml", rev_vit_b, "vit_b_16", 768),
        ("REV_VIT_L.yaml", rev_vit_l, "vit_l_16", 1024),
    ],
    ids=["b", "l"],
)
def test_rev_vit_has_vits_parameters_but_a_two_stream_head(config, builder, vit, width):
    cfg = load_config(CONFIGS / config)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model, reference = build_model(cfg), getattr(torchvision.models, vit)()
        assert _shapes(model) == _shapes(builder(1000, num_frames=1))
    # The head and the final norm see both streams (+1000 x width, +2 x width); there is no class
    # token and no position for it (-2 x width).
    assert count_parameters(model) == count_parameters(reference) + 1000 * width
    assert len(model.rev_backbone.layers) == len(reference.encoder.layers)


@pytest.mark.parametrize(("config", "release", "manifest", "millions"), RELEASED, ids=RELEASED_IDS)
def test_released_checkpoints_load_by_file_and_by_release_name(
    tmp_path, monkeypatch, config, release, manifest, millions
):
    state = _manifest_state(manifest)
    released = RELEASES[release]
    # The release "downloaded" already: a PySlowFast checkpoint in the hub cache.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = tmp_path / "checkpoints" / released.file_name
    path.parent.mkdir()
    torch.save({"epoch": 300, "model_state": state, "cfg": "{}"}, path)

    from_config = build_model(load_config(CONFIGS / config))
    assert load_checkpoint(path, from_config) == {"epoch": 300, "cfg": "{}"}
    # As the demo builds a release: its builder, its class count, its name.
    builder = getattr(revvideo.models, released.builder)
    from_release = builder(released.num_classes, weights=release)
    # The release alone says what to build: one frame, its 1000 classes.
    named_only = builder(weights=release)

    for model in (from_config, from_release, named_only):
        loaded = model.state_dict()
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_imagenet_releases_describe_their_test():
    expected = {"rev_vit_s_in1k": 79.9, "rev_vit_b_in1k": 81.8, "rev_mvit_b_in1k": 82.9}
    names = imagenet1k_class_names()
    assert len(names) == 1000 and names[0] == "tench"
    for name, top1 in expected.items():
        release = RELEASES[name]
        assert release.top1 == top1
        assert release.dataset == IMAGENET_1K
        assert release.class_names() == names
        assert (release.num_classes, release.num_frames, release.views) == (1000, 1, (1, 1))
        assert (release.crop_size, release.test_short_side) == (224, 256)
        assert (release.mean, release.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert release.url == f"https://dl.fbaipublicfiles.com/pyslowfast/rev/{release.file_name}"


@pytest.mark.parametrize("name", list(TINY_IMAGE_MODELS))
def test_custom_backward_matches_autograd_exactly(name):
    torch.manual_seed(0)
    model = TINY_IMAGE_MODELS[name](**RANDOMNESS).double().train()
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    plain_out, plain_grads, plain_rng = step(model, images, custom_backward=False)
    custom_out, custom_grads, custom_rng = step(model, images, custom_backward=True)

    assert torch.equal(plain_out, custom_out), "the same seed must give the same masks"
    assert torch.equal(plain_rng, custom_rng)
    assert_gradients_match(plain_grads, custom_grads, 1e-10)


@pytest.mark.parametrize("name", list(TINY_IMAGE_MODELS))
def test_images_and_one_frame_clips_give_the_same_logits(name):
    model = TINY_IMAGE_MODELS[name]().eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images), model(images.unsqueeze(2)))
    with pytest.raises(ValueError, match="not clips of 4 frames"):
        model(torch.randn(2, 3, 4, 32, 32))


def test_concat_linear_fusion_adds_an_mlp_of_both_streams_in_order():
    fusion = StreamFusion("concat_linear_2", 8)
    x1, x2 = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    both = torch.cat([x1, x2], dim=-1)
    mlp = fusion.fuse_fn
    expected = both + mlp.fc2(torch.nn.functional.gelu(mlp.fc1(both)))

    assert (mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features) == (16, 32, 16)
    torch.testing.assert_close(fusion(x1, x2), expected, rtol=0, atol=0)
    assert StreamFusion("concat_linear", 8).fuse_fn.fc1.out_features == 16
    assert StreamFusion("concat_linear_2_0.25", 8).fuse_fn.drop.p == 0.25
    assert StreamFusion("concat", 8).out_dim == 16 and StreamFusion("avg", 8).out_dim == 8


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(pre_q_fusion="concat_mlp"), r"^pre_q_fusion must be 'avg', .*, got 'concat_mlp'$"),
        (dict(num_frames=8), r"\(patch_2d\) embeds single images: set num_frames to 1, not 8$"),
        (dict(patch_kernel=(1, 7, 7)), r"^patch_kernel must be \(H, W\) with patch_2d"),
    ],
    ids=["fusion", "frames", "kernel"],
)
def test_image_model_mistakes_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        rev_mvit_b_imagenet(**arguments)


@pytest.mark.parametrize(
    "overrides",
    [
        ["MVIT.REV.PRE_Q_FUSION", "concat_mlp"],
        ["DATA.NUM_FRAMES", "8"],
        ["MVIT.PATCH_KERNEL", "[1, 7, 7]"],
    ],
    ids=["fusion", "frames", "kernel"],
)
def test_image_config_mistakes_are_config_errors(overrides):
    with pytest.raises(ConfigError, match=re.escape(overrides[0])) as info:
        build_model(load_config(CONFIGS / "REV_MVIT_B.yaml", overrides))
    assert "\n" not in str(info.value)
