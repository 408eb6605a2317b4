"""Builders with `weights=`: local files, named releases (downloaded from file:// URLs here, never
from the network), their errors, and torch.hub.load through hubconf.py."""

import hashlib
import re
import urllib.error
from pathlib import Path

import pytest
import torch

import revvideo.models
from revvideo.checkpoint import (
    RELEASES,
    Release,
    checkpoint_file,
    fetch_release,
    save_checkpoint,
    stored_config,
)
from revvideo.checkpoint.releases import IMAGENET_1K, KINETICS_400
from revvideo.classes import imagenet1k_class_names, kinetics400_class_names
from revvideo.models import rev_mvit_b_16x4, rev_vit_s
from revvideo.utils.errors import CheckpointError, ConfigError

from .conftest import ROOT, load_script, tiny_cfg

TINY = dict(
    num_frames=4,
    crop_size=32,
    embed_dim=16,
    depth=3,
    dim_mul=((1, 2.0),),
    head_mul=((1, 2.0),),
    pool_q_stride=((1, 1, 2, 2),),
    pool_kv_stride_adaptive=(1, 4, 4),
    transition_layers=(1,),
)
CLIP = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def same_outputs(first, second):
    with torch.no_grad():
        return torch.equal(first.eval()(CLIP), second.eval()(CLIP))


@pytest.fixture
def saved_tiny(tmp_path):
    """A tiny Rev-MViT with 3 classes and its checkpoint file."""
    torch.manual_seed(3)
    model = rev_mvit_b_16x4(3, **TINY)
    save_checkpoint(tmp_path / "tiny.pyth", model)
    return model, tmp_path / "tiny.pyth"


@pytest.fixture
def tiny_release(saved_tiny, tmp_path, monkeypatch):
    """A release of the tiny model served from a file:// URL, with an empty hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _, path = saved_tiny
    release = Release(
        name="tiny_k3",
        builder="rev_mvit_b_16x4",
        url=path.as_uri(),
        file_name="tiny_k3.pyth",
        source="this test",
        top1=0.0,
        views=(1, 1),
        hash_prefix=hashlib.sha256(path.read_bytes()).hexdigest()[:8],
        num_classes=3,
    )
    monkeypatch.setitem(RELEASES, release.name, release)
    return release


def cached(release):
    return Path(torch.hub.get_dir()) / "checkpoints" / release.file_name


def test_local_weights_load_into_the_builders(saved_tiny):
    model, path = saved_tiny

    assert same_outputs(rev_mvit_b_16x4(3, weights=path, **TINY), model)
    assert same_outputs(rev_mvit_b_16x4(3, weights=str(path), **TINY), model)


def test_release_downloads_once_into_the_hub_cache(tiny_release, saved_tiny):
    model, source = saved_tiny

    assert same_outputs(rev_mvit_b_16x4(3, weights="tiny_k3", **TINY), model)
    assert cached(tiny_release).is_file()
    source.unlink()  # from now on only the cache has it
    assert same_outputs(rev_mvit_b_16x4(3, weights="tiny_k3", **TINY), model)


def test_download_with_the_wrong_hash_leaves_nothing_cached(tiny_release, monkeypatch):
    monkeypatch.setitem(
        RELEASES, "tiny_k3", Release(**{**tiny_release.__dict__, "hash_prefix": "00000000"})
    )

    with pytest.raises(
        CheckpointError, match=r"^cannot download tiny_k3 from file://.*invalid hash"
    ):
        rev_mvit_b_16x4(3, weights="tiny_k3", **TINY)

    assert list(cached(tiny_release).parent.iterdir()) == []


def test_offline_download_is_one_line_saying_what_to_do(tiny_release, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)

    with pytest.raises(CheckpointError) as error:
        rev_mvit_b_16x4(3, weights="tiny_k3", **TINY)

    assert str(error.value) == (
        f"cannot download tiny_k3 from {tiny_release.url}: [Errno -3] Temporary failure in name "
        f"resolution; download it elsewhere and pass weights=<path> or save it as "
        f"{cached(tiny_release)}"
    )
    # Given by a config key or a demo argument, the message names that.
    with pytest.raises(CheckpointError, match=r"pass TRAIN\.CHECKPOINT_FILE_PATH <path> or save"):
        checkpoint_file("tiny_k3", "TRAIN.CHECKPOINT_FILE_PATH")


def test_browser_only_release_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    with pytest.raises(CheckpointError, match=r"^mvit_b_16x4_k400_pyslowfast is on Google Drive"):
        fetch_release(RELEASES["mvit_b_16x4_k400_pyslowfast"])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: rev_mvit_b_16x4(3, weights="rev_mvit_b_16x4_k400"),
            r"^weights rev_mvit_b_16x4_k400 classify 400 classes; build the model with "
            r"num_classes=400 \(not 3\)",
        ),
        (
            lambda: rev_vit_s(
                400, weights="rev_mvit_b_16x4_k400", num_frames=4, crop_size=32, depth=1
            ),
            r"^weights rev_mvit_b_16x4_k400 are for rev_mvit_b_16x4, not rev_vit_s$",
        ),
        (
            lambda: rev_mvit_b_16x4(weights="rev_mvit_b"),
            r"^weights 'rev_mvit_b' is neither a file nor a release "
            rf"\({re.escape(', '.join(sorted(RELEASES)))}\)$",
        ),
        (
            lambda: rev_mvit_b_16x4(weights=Path("absent.pyth")),
            r"^checkpoint absent\.pyth does not exist$",
        ),
    ],
    ids=["classes", "builder", "unknown name", "missing file"],
)
def test_unusable_weights_are_one_line_errors_before_any_download(build, message):
    with pytest.raises(CheckpointError, match=message):
        build()


def test_releases_name_real_builders_and_their_datasets_classes():
    names = {KINETICS_400: kinetics400_class_names(), IMAGENET_1K: imagenet1k_class_names()}
    for release in RELEASES.values():
        assert callable(getattr(revvideo.models, release.builder))
        assert release.num_classes == len(release.class_names()) == len(names[release.dataset])
        assert release.class_names() == names[release.dataset]
        assert release.url.startswith("https://")


def test_torchvision_release_is_torchvisions_own_url():
    from torchvision.models import get_weight

    weights = get_weight("MViT_V1_B_Weights.KINETICS400_V1")
    release = RELEASES["mvit_b_16x4_k400"]
    assert release.url == weights.url
    assert release.file_name == weights.url.rsplit("/", 1)[1]
    assert release.top1 == weights.meta["_metrics"]["Kinetics-400"]["acc@1"]


def test_hubconf_exposes_the_builders_to_torch_hub(saved_tiny):
    model, path = saved_tiny
    hubconf = load_script("hubconf.py")

    entry_points = [name for name in dir(hubconf) if callable(getattr(hubconf, name))]
    assert sorted(entry_points) == ["mvit_b_16x4", "rev_mvit_b_16x4", "rev_vit_b", "rev_vit_s"]
    loaded = torch.hub.load(
        str(ROOT), "rev_mvit_b_16x4", source="local", num_classes=3, weights=path, **TINY
    )
    assert same_outputs(loaded, model)


def test_stored_config_reads_revvideo_configs_only():
    cfg = tiny_cfg()
    assert stored_config({"cfg": cfg.dump()}, "c.pyth") == cfg
    assert stored_config({"epoch": 3}, "c.pyth") is None
    with pytest.raises(ConfigError, match=r"\(Non-existent config key: TRAIN\.DATASET\)"):
        stored_config({"cfg": "TRAIN:\n  DATASET: kinetics\n"}, "c.pyth")
    with pytest.raises(ConfigError, match=r"is not a revvideo config \(a list, not a mapping"):
        stored_config({"cfg": "- 1\n- 2\n"}, "c.pyth")
    with pytest.raises(ConfigError, match=r"not a revvideo config \(Type mismatch"):
        stored_config({"cfg": "TRAIN:\n  BATCH_SIZE: many\n"}, "c.pyth")


def test_a_stored_config_keeps_the_settings_left_to_a_search_of_the_gpu():
    # A config converted into a checkpoint as the user wrote it (tools/convert_checkpoint.py).
    cfg = tiny_cfg()
    cfg.TRAIN.BATCH_SIZE = cfg.MVIT.REV.STORED_LAYERS = "auto"
    assert stored_config({"cfg": cfg.dump()}, "c.pyth") == cfg
    with pytest.raises(ConfigError, match="not a revvideo config"):
        stored_config({"cfg": "MVIT: 3\n"}, "c.pyth")  # a section that is not one
