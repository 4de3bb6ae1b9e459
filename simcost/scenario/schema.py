"""Generic YAML-to-dataclass machinery behind scenario files.

`build(cls, data, path)` maps a nested dict onto frozen dataclasses, checking unknown keys,
types (int, float, str, bool, Literal, X | None, tuple[X, ...], nested dataclasses) and the
numeric bounds declared with `bounds()` in field metadata, then calls each class's
`_check(path)` for its own rules. Every failure is an InputError naming the key path, the value
and what was expected. the modules beside it declare the sections; this module knows none of them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import yaml

from simcost.errors import InputError, closest
from simcost.yamlio import check_expansion

MAX_WHOLE_NUMBER = 2**63 - 1  # int64, the type of every integer column and kernel argument


def bounds(why: str = "", **limits: float) -> dict:
    """Field metadata for numeric bounds: gt, ge, le; `why` says why an upper bound exists."""
    return {"bounds": limits, "why": why}


def tag(label: str) -> dict:
    """Field metadata marking the key that picks a variant of a tagged union (`process`, `policy`);
    `label` names the key in errors ("process 'poisson'", "autoscaler policy 'kpa'")."""
    return {"tag": label}


def check_variant_keys(obj, path: str, tag: str, label: str, needs: dict, optional: dict | None = None) -> None:
    """For a section whose `tag` field picks a variant (dist, process, pricing model): every key
    the variant needs is given, and no key of another variant is."""
    kind = getattr(obj, tag)
    needed, allowed = needs[kind], (optional or {}).get(kind, ())
    keys = {k for ks in (*needs.values(), *(optional or {}).values()) for k in ks}
    for name in sorted(keys):
        given = getattr(obj, name) is not None
        if name in needed and not given:
            raise InputError(f"{path}.{name}", f"missing; {label} '{kind}' needs {', '.join(needed)}")
        if given and name not in needed and name not in allowed:
            raise InputError(f"{path}.{name}", f"not used by {label} '{kind}' "
                                               f"(it takes {', '.join(needed + allowed) or 'no keys'})")












def apply_overrides(raw: dict, overrides) -> dict:
    """Return a copy of `raw` with each `a.b.c=value` set; value is parsed as YAML (128, 0.5, null)."""
    raw = _deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--set", f"'{item}' is not of the form key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        check_expansion(value, f"--set {key.strip()}")
        node = raw
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise InputError(f"--set {'.'.join(parts[:i + 1])}", f"is a {type(child).__name__}, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def to_dict(obj: Any) -> Any:
    """A scenario as plain data (for results folders and content hashes)."""
    if dataclasses.is_dataclass(obj):
        # fields a config derives (init=False) are not keys a scenario can give
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (tuple, list)):  # lists, as YAML and JSON write them
        return [to_dict(item) for item in obj]
    return obj


def _deepcopy(value):
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def build(cls: Any, data: Any, path: str) -> Any:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):  # a tagged union, such as ArrivalSpec
        return _convert(cls, data, path)
    where = path or "scenario"
    if not isinstance(data, dict):
        raise InputError(where, f"expected a mapping (section {cls.__name__}), got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise InputError(_join(path, str(key)), f"unknown key{closest(str(key), fields)}")
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InputError(key_path, "missing (required)")
            continue
        value = _convert(hints[name], data[name], key_path)
        _check_bounds(f, value, key_path)
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "_check"):
        obj._check(path)
    return obj


def _convert(tp, value: Any, path: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path)
        if all(dataclasses.is_dataclass(a) for a in inner):
            return _build_variant(inner, value, path)
        raise TypeError(f"unsupported union {tp}")  # a developer error, not a user one
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise InputError(path, f"{_show(value)} is not one of {', '.join(map(str, choices))}{closest(str(value), map(str, choices), list_all=False)}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is tuple:
        item_type, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise TypeError(f"unsupported tuple {tp}; only tuple[X, ...]")  # a developer error
        if not isinstance(value, (list, tuple)):
            raise InputError(path, f"{_show(value)}; expected a list")
        return tuple(_convert(item_type, item, f"{path}[{i}]") for i, item in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(path, f"{_show(value)}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(path, f"{_show(value)}; expected a whole number{_exponent_hint(value)}")
        if abs(value) > MAX_WHOLE_NUMBER:  # numpy columns are int64: a larger value cannot be stored
            raise InputError(path, f"{value} does not fit in 64 bits; expected at most {MAX_WHOLE_NUMBER:,}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(path, f"{_show(value)}; expected a number{_exponent_hint(value)}")
        if value != value or value in (float("inf"), float("-inf")):
            raise InputError(path, f"{value}; expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(path, f"{_show(value)}; expected text")
        return value
    raise TypeError(f"unsupported field type {tp}")


def _tag_field(cls) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if "tag" in f.metadata)


def _variant_keys(cls) -> list[str]:
    """The keys a variant takes besides its tag, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init and "tag" not in f.metadata]


def _build_variant(variants: list, data: Any, path: str):
    """A tagged union: the tag key's value picks the variant class (each declares its tag values
    as a Literal), whose own keys are then the only ones allowed."""
    tag_name = _tag_field(variants[0]).name
    by_value = {v: cls for cls in variants
                for v in typing.get_args(typing.get_type_hints(cls)[tag_name])}
    if not isinstance(data, dict):  # (e.g. `input_tokens: 100`): say what the mapping holds
        raise InputError(path or "scenario", f"expected a mapping {{{tag_name}: ..., ...}} with {tag_name} one of "
                                             f"{', '.join(by_value)}, got {_show(data)}")
    if tag_name not in data:
        raise InputError(_join(path, tag_name), f"missing (required); one of {', '.join(by_value)}")
    kind = _convert(Literal[tuple(by_value)], data[tag_name], _join(path, tag_name))
    cls = by_value[kind]
    label, own = _tag_field(cls).metadata["tag"], _variant_keys(cls)
    others = {key for other in variants for key in _variant_keys(other)}
    # null stands for "not given", as in scenario files written before the union
    data = {k: v for k, v in data.items() if not (v is None and k in others and k not in own)}
    for key in data:
        if key != tag_name and key not in own and key in others:
            raise InputError(_join(path, str(key)), f"not used by {label} '{kind}' (it takes {', '.join(own) or 'no keys'})")
    needed = [f.name for f in dataclasses.fields(cls) if f.init and "tag" not in f.metadata
              and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for key in needed:
        if data.get(key) is None:
            raise InputError(_join(path, key), f"missing; {label} '{kind}' needs {', '.join(needed)}")
    return build(cls, data, path)


def _check_bounds(f: dataclasses.Field, value, path: str) -> None:
    if value is None or isinstance(value, (str, bool)):
        return
    limits = f.metadata.get("bounds", {})
    if "gt" in limits and not value > limits["gt"]:
        raise InputError(path, f"{value}; expected a number > {limits['gt']}")
    if "ge" in limits and not value >= limits["ge"]:
        raise InputError(path, f"{value}; expected a number >= {limits['ge']}")
    if "le" in limits and not value <= limits["le"]:
        why = f" ({f.metadata['why']})" if f.metadata.get("why") else ""
        raise InputError(path, f"{value}; expected a number <= {limits['le']:,}{why}")


def _exponent_hint(value: Any) -> str:
    """YAML 1.1 reads 1e9 (no dot) as text; say how to write it as a number."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return " (YAML reads this as text: write 1.0e+9 rather than 1e9 or 1.0e9, or the digits)"
    return ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
