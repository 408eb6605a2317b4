"""Configs: `get_cfg()` gives the defaults, `load_config()` merges YAML files and overrides and
validates the result (`validate_config`, see revvideo.config.validate)."""

import copy
import functools
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from fvcore.common.config import BASE_KEY, CfgNode

from revvideo.config.defaults import AUTO, AUTO_KEYS, IGNORED_KEYS, get_cfg
from revvideo.config.validate import check_type, unknown_key_error, validate_config
from revvideo.utils.errors import ConfigError, DataError
from revvideo.utils.text import read_text

__all__ = [
    "AUTO",
    "CfgNode",
    "ConfigError",
    "config_from_mapping",
    "get_cfg",
    "load_config",
    "merge_overrides",
    "validate_config",
]

logger = logging.getLogger(__name__)


# A decimal number as YAML 1.2 writes it; YAML 1.1 (PyYAML) reads `1e-6` as a string.
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")


def _merge(tree: dict, node: CfgNode, source: str, prefix: str = "") -> None:
    """Sets the keys of `tree` in `node`, but ignored PySlowFast keys; ConfigError on unknown
    keys and on values of another type than the key's. (fvcore's merge would raise its own
    ValueError on a type it does not expect, and a key whose default is None takes several.)
    A string that writes a number (`1e-6`) is read as that number for a float key: YAML files
    and command-line overrides both merge here."""
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if key in IGNORED_KEYS:
            logger.warning("ignoring config key %s from %s: %s", key, source, IGNORED_KEYS[key])
            continue
        if name not in node:
            raise unknown_key_error(key, source, value)
        current = node[name]
        if isinstance(current, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key} in {source} must be a section, got {value!r}")
            _merge(value, current, source, key + ".")
            continue
        if isinstance(current, float) and isinstance(value, str) and _DECIMAL.match(value):
            # PyYAML reads YAML 1.1, where `1e-6` and `7e-2` (no dot, or an unsigned exponent)
            # are strings; PySlowFast's YAML files write them (its loader literal_evals strings).
            value = float(value)
        check_type(key, value, source)
        # Values as fvcore's merge stores them: an int given for a float is a float, a tuple a list.
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        node[name] = list(value) if isinstance(value, tuple) else value


def config_from_mapping(tree: Mapping[str, Any]) -> CfgNode:
    """The defaults with the keys of a saved config (e.g. a checkpoint's) merged as fvcore
    merges them: KeyError for a key revvideo does not have, ValueError for a value of another
    type than the key's default, except `auto` where a key takes it (AUTO_KEYS)."""
    tree = copy.deepcopy(dict(tree))
    autos = []
    for key in AUTO_KEYS:
        *sections, name = key.split(".")
        node = functools.reduce(
            lambda node, section: node.get(section) if isinstance(node, dict) else None,
            sections,
            tree,
        )
        if isinstance(node, dict) and node.get(name) == AUTO:
            del node[name]
            autos.append((sections, name))
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode(tree))
    for sections, name in autos:
        functools.reduce(lambda node, section: node[section], sections, cfg)[name] = AUTO
    return cfg


def _parse_override(text: str) -> Any:
    if not text.strip():
        # `KEY ""` clears a string key (YAML would read None), e.g. a release name offline.
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def merge_overrides(cfg: CfgNode, opts: Sequence[str]) -> CfgNode:
    """Merges command-line `KEY VALUE` pairs (values parsed as YAML) into `cfg` in place, in
    order; the caller validates the result (load_config does)."""
    if len(opts) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; {opts[-1]!r} has no value")
    for key, text in zip(opts[::2], opts[1::2], strict=True):
        *parents, leaf = key.split(".")
        tree = {leaf: _parse_override(text) if isinstance(text, str) else text}
        for parent in reversed(parents):
            tree = {parent: tree}
        _merge(tree, cfg, "the command line")
    return cfg


def load_config(cfg_file: str | os.PathLike | None = None, opts: Sequence[str] = ()) -> CfgNode:
    """The defaults, with `cfg_file` (YAML, after the files its `_BASE_` names) and then `opts`
    merged on top, validated: ConfigError (one line, naming the file or key) otherwise."""
    cfg = get_cfg()
    if cfg_file is not None:
        for source, tree in _config_files(config_file(cfg_file)):
            _merge(_literal_tuples(tree), cfg, source)
    merge_overrides(cfg, opts)
    validate_config(cfg)
    return cfg


# The configs revvideo ships, its package data (configs/ at the checkout's root links here).
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_file(name: str | os.PathLike) -> str:
    """`name` when it is a file; else the shipped config it names (`configs/kinetics/X.yaml` or
    `kinetics/X.yaml`), so the console scripts find the configs from any folder. ConfigError
    when neither exists, listing the shipped configs."""
    path = os.fspath(name)
    if os.path.isfile(path):
        return path
    if os.path.isabs(path):
        raise ConfigError(f"config file not found: {path}")
    relative = Path(path)
    if relative.parts[:1] == ("configs",):
        relative = Path(*relative.parts[1:])
    if (SHIPPED_CONFIGS / relative).is_file():
        return str(SHIPPED_CONFIGS / relative)
    names = ", ".join(
        sorted(str(file.relative_to(SHIPPED_CONFIGS)) for file in SHIPPED_CONFIGS.glob("*/*.yaml"))
    )
    raise ConfigError(f"config file not found: {path} (revvideo ships configs/ {names})")


def _config_files(path: str, included_by: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """(file, its keys) of `path` and of the files its `_BASE_` names (one, or a list merged in
    order; relative to `path`'s folder), recursively: bases first, the order they merge in.
    `included_by`: the files that include `path`, outermost first."""
    tree = _read_yaml(path, included_by[-1] if included_by else None)
    files = []
    if BASE_KEY in tree:
        bases = tree.pop(BASE_KEY)
        for base in bases if isinstance(bases, list) else [bases]:
            if not isinstance(base, str) or not base:
                raise ConfigError(
                    f"{BASE_KEY} in {path} must name a YAML file, or list several, got {bases!r}"
                )
            base_path = os.path.join(os.path.dirname(path), os.path.expanduser(base))
            chain = (*included_by, path)
            if os.path.realpath(base_path) in map(os.path.realpath, chain):
                loop = " -> ".join((*chain, base_path))
                raise ConfigError(f"{BASE_KEY} makes config files include each other: {loop}")
            files.extend(_config_files(base_path, chain))
    files.append((path, tree))
    return files


def _read_yaml(path: str, included_by: str | None) -> dict:
    """The mapping of config keys in the YAML file `path` (UTF-8, a byte order mark allowed);
    ConfigError naming the file, and the one that names it as its `_BASE_`, otherwise."""
    base_of = f" (the {BASE_KEY} of {included_by})" if included_by else ""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}{base_of}")
    try:
        text = read_text(path)
    except DataError as err:
        raise ConfigError(f"{err}{base_of}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{base_of} is not valid YAML{where}: {problem}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}{base_of} must hold a mapping of config keys")
    return tree


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
