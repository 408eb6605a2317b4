"""Config loading: defaults, YAML merging, overrides and clear errors."""

import logging

import pytest

from revvideo.config import ConfigError, get_cfg, load_config


def test_defaults_use_pyslowfast_names():
    cfg = get_cfg()
    assert cfg.MODEL.MODEL_NAME == "MViT"
    assert cfg.MVIT.REV.CUSTOM_BACKWARD is True
    assert cfg.MVIT.REV.RECOMPUTE_TRANSITIONS is True
    assert get_cfg() is not get_cfg()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("MVIT:\n  DEPTH: 4\n  PATCH_KERNEL: (3, 7, 7)\n  REV:\n    ENABLE: True\n")
    cfg = load_config(path, ["MVIT.DEPTH", "6", "MVIT.MLP_RATIO", "2"])
    assert cfg.MVIT.DEPTH == 6
    assert cfg.MVIT.PATCH_KERNEL == [3, 7, 7]
    assert cfg.MVIT.MLP_RATIO == 2.0
    assert cfg.MVIT.REV.ENABLE is True


def test_base_files_merge_first(tmp_path):
    (tmp_path / "base.yaml").write_text("MVIT:\n  DEPTH: 4\n  EMBED_DIM: 32\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nMVIT:\n  DEPTH: 8\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.MVIT.DEPTH, cfg.MVIT.EMBED_DIM) == (8, 32)


@pytest.mark.parametrize(
    ("yaml_text", "opts", "message"),
    [
        (
            "MVIT:\n  DEPHT: 4\n",
            [],
            r"unknown config key MVIT.DEPHT in .*did you mean MVIT.DEPTH\?",
        ),
        ("", ["MVIT.DEPTH", "deep"], r"MVIT.DEPTH in the command line must be int"),
        ("", ["MVIT.DEPTH"], r"KEY VALUE pairs"),
        ("MVIT: 3\n", [], r"MVIT .* must be a section"),
        ("MVIT: [1\n", [], r"not valid YAML"),
        ("- 1\n", [], r"must hold a mapping"),
    ],
    ids=["typo", "wrong-type", "odd-overrides", "not-a-section", "bad-yaml", "not-a-mapping"],
)
def test_user_mistakes_are_one_line_errors(tmp_path, yaml_text, opts, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, opts)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_pyslowfast_keys_we_do_not_use_are_ignored_with_a_warning(tmp_path, caplog):
    path = tmp_path / "slowfast.yaml"
    path.write_text("MODEL:\n  ARCH: mvit\nMVIT:\n  NORM: layernorm\n  DEPTH: 3\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path)
    assert cfg.MVIT.DEPTH == 3
    assert "ignoring config key MODEL.ARCH" in caplog.text
