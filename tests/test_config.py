"""Config loading: defaults, YAML merging, overrides and clear errors."""

import logging
from pathlib import Path

import pytest
import torch

from revvideo.config import ConfigError, get_cfg, load_config
from revvideo.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_use_pyslowfast_names():
    cfg = get_cfg()
    assert cfg.MODEL.MODEL_NAME == "MViT"
    assert cfg.MVIT.REV.CUSTOM_BACKWARD is True
    assert cfg.MVIT.REV.RECOMPUTE_TRANSITIONS is True
    assert get_cfg() is not get_cfg()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(
        "MVIT:\n  DEPTH: 4\n  PATCH_KERNEL: (3, 7, 7)\n  CLS_EMBED_ON: False\n"
        "  REV:\n    ENABLE: True\n"
    )
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
        # A misspelt section is named by its key, which the suggestion corrects.
        (
            "SOLVR:\n  MAX_EPOCH: 3\n  BASE_LR: 0.1\n",
            [],
            r"unknown config key SOLVR\.MAX_EPOCH in .*bad\.yaml; did you mean SOLVER\.MAX_EPOCH\?$",
        ),
        (
            "",
            ["SOLVR.MAX_EPOCH", "3"],
            r"^unknown config key SOLVR\.MAX_EPOCH in the command line; did you mean "
            r"SOLVER\.MAX_EPOCH\?$",
        ),
        (
            "",
            ["MVIT.RVE.ENABLE", "True"],
            r"unknown config key MVIT\.RVE\.ENABLE .*; did you mean MVIT\.REV\.ENABLE\?$",
        ),
        # PySlowFast's sections are no misspelling of ours (DETECTION.ENABLE is not TEST.ENABLE).
        ("DETECTION:\n  ENABLE: False\n", [], r"unknown config key DETECTION in .*bad\.yaml$"),
        ("", ["RESNET.DEPTH", "50"], r"^unknown config key RESNET in the command line$"),
        ("", ["VIS_MASK.ENABLE", "True"], r"^unknown config key VIS_MASK in the command line$"),
        # Within one of our sections, only its keys are suggested.
        (
            "",
            ["MODEL.DETECTION.ENABLE", "True"],
            r"^unknown config key MODEL\.DETECTION\.ENABLE in the command line$",
        ),
        ("", ["MVIT.DEPTH", "deep"], r"MVIT.DEPTH in the command line must be int"),
        ("", ["MVIT.DEPTH"], r"KEY VALUE pairs"),
        ("MVIT: 3\n", [], r"MVIT .* must be a section"),
        ("MVIT: [1\n", [], r"not valid YAML"),
        ("- 1\n", [], r"must hold a mapping"),
        (
            "",
            ["MODEL.MODEL_NAME", "MViT", "MVIT.REV.STORED_LAYERS", "auto"],
            r"MVIT\.REV\.STORED_LAYERS auto .* needs MODEL\.MODEL_NAME RevMViT",
        ),
        (
            "",
            ["MVIT.REV.STORED_LAYERS", "some"],
            r"MVIT\.REV\.STORED_LAYERS in the command line must",
        ),
        # Strings that are no number stay errors for a float key (PySlowFast's 1e-6 loads).
        ("SOLVER:\n  COSINE_END_LR: 1e-6x\n", [], r"SOLVER\.COSINE_END_LR in .*bad\.yaml must"),
        ("SOLVER:\n  WEIGHT_DECAY: e-2\n", [], r"SOLVER\.WEIGHT_DECAY in .* got 'e-2'$"),
        ("", ["SOLVER.BASE_LR", "tiny"], r"SOLVER\.BASE_LR in the command line must be float"),
        ("", ["SOLVER.BASE_LR", "1e400"], r"SOLVER\.BASE_LR .* must be a finite number"),
        ("", ["SOLVER.BASE_LR", "nan"], r"SOLVER\.BASE_LR .* must be float .*got 'nan'$"),
    ],
    ids=[
        "typo",
        "section-typo",
        "section-typo-override",
        "subsection-typo",
        "pyslowfast-section",
        "pyslowfast-section-override",
        "pyslowfast-vis-mask",
        "unknown-subsection",
        "wrong-type",
        "odd-overrides",
        "not-a-section",
        "bad-yaml",
        "not-a-mapping",
        "stored-auto-without-reversible",
        "stored-neither-list-nor-auto",
        "float-trailing-letter",
        "float-no-mantissa",
        "float-a-word",
        "float-overflow",
        "float-nan-word",
    ],
)
def test_user_mistakes_are_one_line_errors(tmp_path, yaml_text, opts, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path, opts)
    assert "\n" not in str(info.value)


# PySlowFast's configs/Kinetics/REV_MVIT_B_16x4_CONV.yaml writes its SOLVER block so (and its
# ImageNet configs WARMUP_START_LR: 1e-8); PyYAML (YAML 1.1) reads `1e-6` and `7e-2` as strings.
PYSLOWFAST_SOLVER = """\
SOLVER:
  BASE_LR_SCALE_NUM_SHARDS: True
  BASE_LR: 0.0001
  LR_POLICY: cosine
  COSINE_AFTER_WARMUP: True
  COSINE_END_LR:  1e-6
  MAX_EPOCH: 200
  WARMUP_EPOCHS: 50.0
  MOMENTUM: 0.9
  WEIGHT_DECAY: 7e-2
  ZERO_WD_1D_PARAM: True
  WARMUP_START_LR: 1e-8
  OPTIMIZING_METHOD: adamw
"""


def test_pyslowfast_exponent_numbers_load_as_floats(tmp_path):
    path = tmp_path / "slowfast.yaml"
    path.write_text(PYSLOWFAST_SOLVER)
    solver = load_config(path).SOLVER
    assert (solver.COSINE_END_LR, solver.WEIGHT_DECAY, solver.WARMUP_START_LR) == (1e-6, 0.07, 1e-8)
    assert all(type(v) is float for v in (solver.COSINE_END_LR, solver.WEIGHT_DECAY))


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-7", 1e-7), ("2E-5", 2e-5), ("1.5e+1", 15.0), ("+3e0", 3.0), ("'1e-6'", 1e-6)],
)
def test_exponent_overrides_load_as_floats(text, value):
    start_lr = load_config(None, ["SOLVER.WARMUP_START_LR", text]).SOLVER.WARMUP_START_LR
    assert start_lr == value
    assert type(start_lr) is float


def test_a_number_string_stays_a_string_for_a_string_key():
    assert load_config(None, ["OUTPUT_DIR", "1e-6"]).OUTPUT_DIR == "1e-6"


def test_stored_layers_auto_builds_a_model_that_stores_none_until_the_engine_chooses():
    cfg = load_config(
        ROOT / "configs" / "kinetics" / "REV_MVIT_B_16x4.yaml", ["MVIT.REV.STORED_LAYERS", "auto"]
    )
    with torch.device("meta"):
        assert build_model(cfg).rev_backbone.stored_layers == frozenset()


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


def test_a_list_of_base_files_merges_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("MVIT:\n  DEPTH: 4\n  EMBED_DIM: 32\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("_BASE_: ../a.yaml\nMVIT:\n  EMBED_DIM: 64\n")
    (tmp_path / "child.yaml").write_text("_BASE_: [a.yaml, sub/b.yaml]\nMVIT:\n  MLP_RATIO: 2\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.MVIT.DEPTH, cfg.MVIT.EMBED_DIM, cfg.MVIT.MLP_RATIO) == (4, 64, 2.0)


@pytest.mark.parametrize(
    ("child", "files", "message"),
    [
        ("_BASE_: nope.yaml\n", {}, r"config file not found: .*nope\.yaml \(the _BASE_ of "),
        ("_BASE_: child.yaml\n", {}, r"include each other: .*child\.yaml -> .*child\.yaml$"),
        (
            "_BASE_: loop.yaml\n",
            {"loop.yaml": "_BASE_: child.yaml\n"},
            r"include each other: .*child\.yaml -> .*loop\.yaml -> .*child\.yaml$",
        ),
        ("_BASE_: list.yaml\n", {"list.yaml": "- 1\n"}, r"list\.yaml \(the _BASE_ of .*\) must"),
        ("_BASE_: 5\n", {}, r"_BASE_ in .*child\.yaml must name a YAML file.*got 5$"),
        ("_BASE_:\n", {}, r"_BASE_ in .*child\.yaml must name a YAML file.*got None$"),
        ("_BASE_: [a.yaml, 7]\n", {"a.yaml": ""}, r"must name a YAML file.*got \['a\.yaml', 7\]"),
        (
            "_BASE_: typo.yaml\n",
            {"typo.yaml": "MVIT:\n  DEPHT: 4\n"},
            r"unknown config key MVIT\.DEPHT in .*typo\.yaml; did you mean MVIT\.DEPTH\?",
        ),
        (
            "_BASE_: bad.yaml\n",
            {"bad.yaml": "MVIT: [1\n"},
            r"bad\.yaml \(the _BASE_ of .*\) is not",
        ),
    ],
    ids=["missing", "itself", "loop", "a-list", "a-number", "empty", "list-entry", "typo", "yaml"],
)
def test_base_file_mistakes_are_one_line_errors(tmp_path, child, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "child.yaml").write_text(child)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path / "child.yaml")
    assert "\n" not in str(info.value)


def test_config_files_are_utf8_with_or_without_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff# café\nMVIT:\n  DEPTH: 3\n".encode())
    assert load_config(path).MVIT.DEPTH == 3
    path.write_bytes("MVIT:\n  # caf\xe9\n  DEPTH: 3\n".encode("latin-1"))
    with pytest.raises(
        ConfigError,
        match=r"bom\.yaml, line 2: not UTF-8 text \(byte 0xe9\); save the file as UTF-8$",
    ):
        load_config(path)


def test_an_empty_value_is_not_the_default(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("MVIT:\n  DEPTH:\n")
    with pytest.raises(ConfigError, match=r"MVIT\.DEPTH in .*empty\.yaml must be int .*got None"):
        load_config(path)


def test_a_key_whose_default_is_none_takes_none_again(tmp_path):
    path = tmp_path / "kernel.yaml"
    path.write_text("MVIT:\n  POOL_KVQ_KERNEL: [3, 3, 3]\n")
    assert load_config(path, ["MVIT.POOL_KVQ_KERNEL", "null"]).MVIT.POOL_KVQ_KERNEL is None


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs").glob("*/*.yaml")),
    ids=lambda path: path.parent.name + "/" + path.stem,
)
def test_shipped_configs_are_valid(path):
    load_config(path)


@pytest.mark.parametrize(
    "path", sorted((ROOT / "configs" / "kinetics").glob("*.yaml")), ids=lambda path: path.stem
)
def test_kinetics_recipes_train_at_pyslowfasts_rate_per_video(path):
    # PySlowFast: BASE_LR 1e-4 for one machine's TRAIN.BATCH_SIZE of 16 videos, times NUM_SHARDS
    # machines (BASE_LR_SCALE_NUM_SHARDS), so 1e-4 / 16 per video of the global batch.
    cfg = load_config(path)
    rate_per_video = cfg.SOLVER.BASE_LR / cfg.SOLVER.BASE_LR_BATCH_SIZE
    assert rate_per_video == pytest.approx(1e-4 / 16, rel=1e-9)
    warmup_start_fraction = cfg.SOLVER.WARMUP_START_LR / cfg.SOLVER.BASE_LR
    assert warmup_start_fraction == pytest.approx(1e-6 / 1e-4, rel=1e-9)


def test_an_empty_override_clears_a_string_key():
    cfg = load_config(
        ROOT / "configs" / "finetune" / "REV_MVIT_B_16x4.yaml", ["TRAIN.CHECKPOINT_FILE_PATH", ""]
    )
    assert cfg.TRAIN.CHECKPOINT_FILE_PATH == ""
