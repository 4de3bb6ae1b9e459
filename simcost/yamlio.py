"""Reading YAML from users' files (scenarios, catalogs, spaces, levers, profiles): one strict reader whose every failure is an InputError naming the file and line."""

from __future__ import annotations

from pathlib import Path

import yaml

from simcost.errors import InputError


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping that repeats a key is an error: the plain loader keeps
    the last value silently, so `replicas: 2` written twice would run whichever came second."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first at line {seen[key]}); each key may appear once",
                key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml_file(path: Path, what: str):
    """A YAML file's data; a file that cannot be read, is not UTF-8, is not YAML or repeats a key
    is an InputError naming the file (and line), so no reader of user files gives a traceback."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), f"cannot read {what} ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: tolerate a byte-order mark from Windows editors
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the {what} as UTF-8") from None
    return parse_yaml(text, str(path))


# Far above any scenario, catalog or space file (the bundled catalog holds ~20,000 values).
MAX_YAML_VALUES = 1_000_000


def check_expansion(data, where: str) -> None:
    """YAML aliases share one object among their uses, so a few lines can stand for billions of
    values ("billion laughs") or for a list that contains itself; every reader that walks the data
    would then hang or recurse without end. Count values as a walk would see them, up to a bound."""
    pending, seen = [data], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise InputError(where, f"expands to more than {MAX_YAML_VALUES:,} values through YAML aliases "
                                    "(an alias that refers to itself, or aliases of aliases); write the values out")
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def parse_yaml(text: str, where: str):
    """YAML text -> data through the duplicate-refusing loader; errors name `where:line`."""
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        check_expansion(data, where)
        return data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise InputError(at, f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise InputError(where, "nested too deeply to be a scenario") from None
