"""Small typed helpers for dax plugins in Python (componentize-py).

WIT maps to Python like this (see the generated `wit_world` bindings):
  record -> dataclass with snake_case fields;  enum -> Enum (Severity.HIGH)
  variant -> one dataclass per case, e.g. Answer_Value(value=1.0)
  list<u8> -> bytes;  option<T> -> T | None;  u64 -> int
  result<T, E> -> return T; raise Err(E) to return the error (see `fail` below)
"""

import json
from typing import Any, Mapping, NoReturn, TypeVar

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import types

T = TypeVar("T", bound=Mapping[str, Any])

_ERRORS = {
    "invalid-config": types.PluginError_InvalidConfig,
    "invalid-input": types.PluginError_InvalidInput,
    "unavailable": types.PluginError_Unavailable,
    "not-found": types.PluginError_NotFound,
    "unsupported": types.PluginError_Unsupported,
    "internal": types.PluginError_Internal,
}


def fail(kind: str, message: str) -> NoReturn:
    """Return a plugin-error from a call: `fail("invalid-input", "not a number")`."""
    raise Err(_ERRORS[kind](message))


def info(name: str, version: str, role: types.PluginRole, description: str,
         config_schema: Mapping[str, Any] | None = None) -> types.PluginInfo:
    """The answer of `describe`."""
    return types.PluginInfo(name, version, role, description, json.dumps(config_schema or {}))


def parse_config(config: str, defaults: T) -> dict[str, Any]:
    """Parse the JSON config the host passes to every call, with defaults for absent keys;
    an unknown key is an invalid-config error (typos fail loudly)."""
    try:
        parsed = json.loads(config)
    except ValueError as e:
        fail("invalid-config", f"config is not JSON: {e}")
    unknown = [k for k in parsed if k not in defaults]
    if unknown:
        fail("invalid-config", f"unknown key `{unknown[0]}`; the keys are: {', '.join(defaults)}")
    return {**defaults, **parsed}


def problems(config: str, defaults: Mapping[str, Any], field: str = "") -> list[types.ConfigProblem]:
    """`validate-config` from `parse_config`: one problem or none."""
    try:
        parse_config(config, defaults)
        return []
    except Err as e:
        return [types.ConfigProblem(field, e.value.value)]


class log:
    """Log through the host: lines appear in dax's output tagged with the plugin's name."""

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)
