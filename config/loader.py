"""Load an INI file into frozen dataclasses, with precedence flag > env > file > default.

A config class is a frozen dataclass whose fields are sections, each itself a
frozen dataclass of keys. The INI names come from field metadata (``ini=``),
so the original platform's names (``heartbeat-checker``, ``server_ip``) stay
exactly as they were. The environment variable of a key is
``PTAP_<SECTION>_<KEY>`` in upper case with ``-`` as ``_``, e.g.
``PTAP_BASIC_BIND_PORT``.

Every problem is a :class:`ConfigError` whose message names the file, the
section and the key, so a start-up failure is one line a person can act on.
"""

from __future__ import annotations

import configparser
import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A config file, variable or flag that cannot be used."""


def key(default: Any, *, ini: str | None = None, lo: float | None = None,
        hi: float | None = None, choices: tuple[str, ...] | None = None,
        doc: str = "") -> Any:
    """Declare one config key: its default, INI name and allowed range."""
    meta = {"ini": ini, "lo": lo, "hi": hi, "choices": choices, "doc": doc}
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, *, ini: str | None = None) -> Any:
    """Declare one section of a config class."""
    return dataclasses.field(default_factory=cls, metadata={"ini": ini})


def ini_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("ini") or f.name


def load(cls: type[T], path: Path | None, *, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> T:
    """Build ``cls`` from defaults, then ``path``, then ``env``, then ``overrides``.

    ``overrides`` maps ``"section.key"`` (INI names) to values from flags.
    A missing ``path`` is an error; ``None`` means defaults only.
    """
    source = str(path) if path is not None else "<defaults>"
    values: dict[tuple[str, str], tuple[str, Any]] = {}
    if path is not None:
        for sec, k, raw in _read_ini(cls, Path(path)):
            values[(sec, k)] = (source, raw)
    for sec_field in dataclasses.fields(cls):  # type: ignore[arg-type]
        sec = ini_name(sec_field)
        for kf in dataclasses.fields(_hints(cls)[sec_field.name]):
            var = f"PTAP_{sec}_{ini_name(kf)}".upper().replace("-", "_")
            if env is not None and var in env:
                values[(sec, ini_name(kf))] = (f"environment {var}", env[var])
    for dotted, raw in (overrides or {}).items():
        sec, _, k = dotted.partition(".")
        values[(sec, k)] = ("command line", raw)
    return _build(cls, values, source)


def _read_ini(cls: type, path: Path) -> list[tuple[str, str, str]]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found — pass --config with an existing file") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: cannot parse: {first}") from None
    known = {ini_name(f): f for f in dataclasses.fields(cls)}
    out = []
    for sec in parser.sections():
        if sec not in known:
            raise ConfigError(f"{path} [{sec}]: unknown section (known: {', '.join(known)})")
        keys = {ini_name(f) for f in dataclasses.fields(_hints(cls)[known[sec].name])}
        for k, raw in parser.items(sec):
            if k not in keys:
                raise ConfigError(f"{path} [{sec}] {k}: unknown key (known: {', '.join(sorted(keys))})")
            out.append((sec, k, raw))
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], values: dict[tuple[str, str], tuple[str, Any]], path: str) -> T:
    sections = {}
    for sec_field in dataclasses.fields(cls):  # type: ignore[arg-type]
        sec_cls = _hints(cls)[sec_field.name]
        sec = ini_name(sec_field)
        kwargs = {}
        hints = _hints(sec_cls)
        for kf in dataclasses.fields(sec_cls):
            k = ini_name(kf)
            if (sec, k) in values:
                origin, raw = values[(sec, k)]
                where = f"{path} [{sec}] {k}" if origin == path else f"{origin} ([{sec}] {k})"
                kwargs[kf.name] = _coerce(raw, hints[kf.name], kf, where)
        sections[sec_field.name] = sec_cls(**kwargs)
    _check_names(cls, values)
    return cls(**sections)


def _check_names(cls: type, values: dict[tuple[str, str], tuple[str, Any]]) -> None:
    """Flags and variables must name real keys too: a typo must not pass silently."""
    known = {ini_name(f): {ini_name(k) for k in dataclasses.fields(_hints(cls)[f.name])}
             for f in dataclasses.fields(cls)}
    for (sec, k), (origin, _) in values.items():
        if sec not in known:
            raise ConfigError(f"{origin}: unknown section [{sec}] (known: {', '.join(known)})")
        if k not in known[sec]:
            raise ConfigError(f"{origin}: unknown key [{sec}] {k}")


_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}


def _coerce(raw: Any, hint: Any, f: dataclasses.Field[Any], where: str) -> Any:
    """Turn a string (or a flag's value) into the key's type, checking its range."""
    try:
        value = _convert(raw, hint)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta.get("lo") is not None and value < meta["lo"]:
        raise ConfigError(f"{where}: {value} is below the minimum {meta['lo']}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise ConfigError(f"{where}: {value} is above the maximum {meta['hi']}")
    return value


def _convert(raw: Any, hint: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if hint is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"{raw!r} is not a boolean (use yes or no)")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    if typing.get_origin(hint) is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    return text


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(section, key, default, doc)`` for every key: used to check sample files."""
    rows = []
    for sec_field in dataclasses.fields(cls):
        sec_cls = _hints(cls)[sec_field.name]
        for kf in dataclasses.fields(sec_cls):
            rows.append((ini_name(sec_field), ini_name(kf), kf.default, kf.metadata.get("doc", "")))
    return rows
