"""Config files read strictly, before Snakemake reads them: plain data, every key once.

Snakemake's own loader keeps the last of two equal keys without a word (`epochs: 2`, then
`epochs: 200`), constructs PyYAML's Python tags (`!!python/name:os.system` becomes a function;
tags it refuses come out as "not valid JSON or YAML ... tab indentation"), and evaluates YTE
expressions in any file that sets `__use_yte__: true`. The Snakefile reads every config file
it is given with `check_config_file` first, and each of those stops the run with one line
naming the file, the line and what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

import yaml

from ..config import ConfigError

_CORE = "tag:yaml.org,2002:"
# What YAML resolves plain text to: data, never objects of a programming language.
PLAIN_TAGS = frozenset(_CORE + name for name in ("null", "bool", "int", "float", "str", "timestamp", "seq", "map",
                                                 "merge"))
YTE_KEY = "__use_yte__"


class ConfigFileError(ConfigError):
    """A config file that is not plain, unambiguous YAML or JSON data."""


def check_config_files(paths: Iterable[str | os.PathLike[str]]) -> None:
    """`check_config_file` for each path that exists (Snakemake itself reports a missing one)."""
    for path in paths:
        if os.path.isfile(path):
            check_config_file(path)


def check_config_file(path: str | os.PathLike[str]) -> None:
    """Raise ConfigFileError, naming the file and line, unless `path` holds plain data with unique keys.

    Refused: a key given twice in one mapping, a tag other than YAML's own data types (such as
    `!!python/...`), YTE templating (`__use_yte__: true`), YAML syntax errors, and a top level
    that is not a mapping.
    """
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"{name}: cannot be read as UTF-8 text ({err})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        if _json_without_duplicates(name, text):
            return  # JSON that PyYAML's YAML 1.1 does not parse (tabs, say); Snakemake reads it as JSON
        raise ConfigFileError(_yaml_error(name, err)) from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigFileError(f"{name}: expected a mapping of datasets, models and experiments at the top level, "
                              f"got {'nothing' if root is None else _kind(root)}")
    _check_yte(name, root)
    try:
        _Walker(name).walk(root, "")
    except ConfigFileError as err:
        # Raised afresh: the walk's recursion would fill Snakemake's report with a frame per level.
        raise ConfigFileError(str(err)) from None


def _yaml_error(name: str, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return f"{name}{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")


def _json_without_duplicates(name: str, text: str) -> bool:
    """Whether `text` is JSON; raises on a key given twice in one object."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _value in items:
            if key in seen:
                raise ConfigFileError(f"{name}: the key {key!r} is given twice in one object; JSON readers keep "
                                      "only the last: remove one")
            seen.add(key)
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except ValueError as err:
        if isinstance(err, ConfigFileError):
            raise
        return False
    return True


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}.get(type(node), f"the value {node.value!r}")


def _check_yte(name: str, root: yaml.MappingNode) -> None:
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == YTE_KEY and _construct(value):
            raise ConfigFileError(
                f"{name}, line {key.start_mark.line + 1}: {YTE_KEY} turns on Snakemake's YTE templating, which runs "
                "Python code written in the config file; this workflow refuses it: write plain values instead")


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _tag_text(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


class _Walker:
    """Visits every node once (aliases may share one), checking tags and keys."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: set[int] = set()

    def walk(self, node: yaml.Node, path: str) -> None:
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if node.tag not in PLAIN_TAGS:
            raise ConfigFileError(
                f"{self.name}, line {node.start_mark.line + 1}: {path or 'the top level'} has the tag "
                f"{_tag_text(node.tag)}, which is not allowed: a config file holds plain data (mappings, lists, "
                "text, numbers, true/false, null)")
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, f"{path}[{i}]")
        elif isinstance(node, yaml.MappingNode):
            self._mapping(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str) -> None:
        marks: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            self.walk(key_node, path)
            # A merge key (<<) copies another mapping's keys in, which its own keys may override.
            plain = isinstance(key_node, yaml.ScalarNode) and key_node.tag != _CORE + "merge"
            key = _construct(key_node) if plain else None
            child = f"{path}.{key}" if path else str(key)
            if key is not None:
                first, mark = marks.get(key), key_node.start_mark
                if first is not None:
                    where = (f"lines {first.line + 1} and {mark.line + 1}" if first.line != mark.line else
                             f"line {mark.line + 1}, columns {first.column + 1} and {mark.column + 1}")
                    raise ConfigFileError(
                        f"{self.name}: {child} is given twice, on {where}; YAML readers keep only the last one "
                        "without a word: remove one")
                marks[key] = mark
            self.walk(value_node, child)
