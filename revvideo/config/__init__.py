"""Configs: `get_cfg()` gives the defaults, `load_config()` merges a YAML file and overrides."""

import difflib
import logging
import os
from collections.abc import Sequence
from typing import Any

import yaml
from fvcore.common.config import CfgNode

from revvideo.config.defaults import IGNORED_KEYS, get_cfg
from revvideo.utils.errors import ConfigError

__all__ = ["CfgNode", "ConfigError", "get_cfg", "load_config", "merge_overrides"]

logger = logging.getLogger(__name__)


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        full = f"{prefix}{name}"
        keys.extend(_all_keys(value, full + ".") if isinstance(value, CfgNode) else [full])
    return keys


def _unknown_key_error(key: str, defaults: CfgNode, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(defaults), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigError(f"unknown config key {key} in {source}{hint}")


def _check_value(key: str, value: Any, default: Any, source: str) -> Any:
    """Coerces ints given for float keys and rejects values of another type, naming the key."""
    if default is None or value is None:
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    if type(value) is not type(default):
        raise ConfigError(
            f"config key {key} in {source} must be {type(default).__name__} "
            f"(like {default!r}), got {value!r}"
        )
    return value


def _validated(tree: dict, defaults: CfgNode, source: str, prefix: str = "") -> dict:
    """Returns `tree` without ignored PySlowFast keys, raising ConfigError on unknown keys."""
    clean = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if key in IGNORED_KEYS:
            logger.warning("ignoring config key %s from %s: %s", key, source, IGNORED_KEYS[key])
            continue
        if name not in defaults:
            raise _unknown_key_error(key, get_cfg(), source)
        default = defaults[name]
        if isinstance(default, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key} in {source} must be a section, got {value!r}")
            clean[name] = _validated(value, default, source, key + ".")
        else:
            clean[name] = _check_value(key, value, default, source)
    return clean


def _parse_override(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def merge_overrides(cfg: CfgNode, opts: Sequence[str]) -> CfgNode:
    """Merges command-line `KEY VALUE` pairs (values parsed as YAML) into `cfg` in place."""
    if len(opts) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; {opts[-1]!r} has no value")
    tree: dict = {}
    for key, text in zip(opts[::2], opts[1::2], strict=True):
        *parents, leaf = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _parse_override(text) if isinstance(text, str) else text
    cfg.merge_from_other_cfg(CfgNode(_validated(tree, cfg, "the command line")))
    return cfg


def load_config(cfg_file: str | os.PathLike | None = None, opts: Sequence[str] = ()) -> CfgNode:
    """The defaults, with `cfg_file` (YAML, `_BASE_` allowed) and then `opts` merged on top."""
    cfg = get_cfg()
    if cfg_file is not None:
        source = os.fspath(cfg_file)
        if not os.path.isfile(source):
            raise ConfigError(f"config file not found: {source}")
        try:
            with open(source) as file:
                top = yaml.safe_load(file)
            if top is not None and not isinstance(top, dict):
                raise ConfigError(f"{source} must hold a mapping of config keys")
            tree = CfgNode.load_yaml_with_base(source, allow_unsafe=False) if top else {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
        tree = _literal_tuples(tree)
        cfg.merge_from_other_cfg(CfgNode(_validated(tree, cfg, source)))
    return merge_overrides(cfg, opts)


def _literal_tuples(tree: dict) -> dict:
    """PySlowFast YAML files write some lists as strings like "(3, 7, 7)"; reads them as lists."""
    out = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            value = _literal_tuples(value)
        elif isinstance(value, str) and value.startswith("(") and value.endswith(")"):
            parsed = _parse_override("[" + value[1:-1] + "]")
            value = parsed if isinstance(parsed, list) else value
        out[name] = value
    return out
