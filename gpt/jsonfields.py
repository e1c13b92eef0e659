"""Checking JSON read from disk (a hand-edited state.json, say) before it builds anything: each
value against the type of the dataclass field it will fill, so that a wrong value is named
where it was read instead of failing later, far away, as a traceback."""
import dataclasses
import json
import math
import typing


def is_int(value) -> bool:
    return type(value) is int


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value, kind) -> bool:
    """Whether a JSON value fits a dataclass field's annotation (int, float, bool, str, Optional)."""
    if typing.get_origin(kind) is typing.Union:
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return is_int(value)
    if kind is float:
        return is_number(value) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    return True


def check_fields(values, cls, where: str) -> dict:
    """`values` (read from JSON) as keyword arguments for the dataclass `cls`: a dict whose keys
    are its fields, every required field present, each value of the field's type."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a JSON object, got {show(values)}")
    kinds = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"{where} has an unknown key {key!r} (known: {', '.join(fields)})")
        if not _fits(value, kinds[key]):
            raise ValueError(f"{where}: {key!r} must be {_type_name(kinds[key])}, got {show(value)}")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where} has no {missing[0]!r}")
    return values


def _type_name(kind) -> str:
    if typing.get_origin(kind) is typing.Union:
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(kind, str(kind))


def show(value) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."
