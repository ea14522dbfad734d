"""One validated configuration object, built from ``config.yaml``.

Each stage declares its own section dataclass next to the code that uses it (``DetectorConfig`` in
``agent/pipeline/detect.py``, ``MqttConfig`` in ``agent/pipeline/publish/mqtt.py`` ...); this module only assembles the root
(:class:`Config`) and converts YAML into those dataclasses with one generic loader.

The loader understands ``bool``/``int``/``float``/``str``, ``Optional[X]``, ``List[X]``,
``Dict[str, X]``, ``Literal[...]`` and nested dataclasses. Field metadata:

* ``help``: one line shown by ``maskwatch check-config`` and in error messages;
* ``path``: the string is a filesystem path; a relative one resolves against the config file's
  folder (bare words such as ``picamera2`` or device numbers are left alone).

A section's ``__post_init__`` may raise ``ValueError``; the message is reported with the section's
key path and line. Every error names the file, the key path, the YAML line and the fix; unknown keys
get a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Type, TypeVar

import yaml

from agent.pipeline.alert import AlertConfig
from agent.pipeline.classify import ClassifierConfig
from agent.pipeline.detect import DetectorConfig
from agent.pipeline.publish.mqtt import MqttConfig
from agent.service.preview import PreviewConfig
from agent.pipeline.source import SourceConfig
from agent.pipeline.track import TrackerConfig

T = TypeVar("T")
KeyPath = Tuple[str, ...]

READY_ANYWAY_S = 30.0  # a camera absent at start: READY=1 after this long, so systemd does not restart-loop


@dataclass
class RuntimeConfig:
    """``runtime:`` section -- the camera's name, threads, stats."""

    camera: str = field(default="doorway", metadata={"help": "camera name: in alerts and MQTT topics"})
    num_threads: int = field(default=1, metadata={"help": "CPU threads per model and for image operations (1 leaves a core to the camera)"})
    stats_interval_s: float = field(default=60.0, metadata={"help": "seconds between stats reports; 0: never"})
    state_dir: str = field(
        default="/var/lib/maskwatch",
        metadata={"help": "folder for state kept across restarts (the MQTT alert spool)", "path": True},
    )
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="info", metadata={"help": "log level of messages on stderr"}
    )
    precision: Literal["auto", "int8", "float16"] = field(
        default="auto",
        metadata={"help": "which variant of each model runs: auto times the int8 and float16 variants a sidecar pins"
                  " (about a second at start) and keeps the faster; int8 / float16: that one; a sidecar pinning no"
                  " variants runs as named"},
    )
    ready_timeout_s: float = field(
        default=READY_ANYWAY_S,
        metadata={"help": "a camera down at start: tell systemd we are up after this many seconds (and keep retrying)"},
    )

    def __post_init__(self) -> None:
        if not self.camera or any(c in self.camera for c in "/+#") or self.camera.strip() != self.camera:
            raise ValueError("camera must be a non-empty name without '/', '+', '#' or surrounding spaces")
        if not 1 <= self.num_threads <= 64:
            raise ValueError("num_threads must be between 1 and 64")
        if self.stats_interval_s < 0:
            raise ValueError("stats_interval_s must be >= 0")
        if not 0 < self.ready_timeout_s <= 3600:
            raise ValueError("ready_timeout_s must be > 0 and at most 3600 (below systemd's TimeoutStartSec)")


@dataclass
class Config:
    """The root: one section per stage, each defined next to the code that reads it."""

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata={"help": "camera name, threads, stats"})
    source: SourceConfig = field(default_factory=SourceConfig, metadata={"help": "where frames come from"})
    detector: DetectorConfig = field(default_factory=DetectorConfig, metadata={"help": "face detector model and filters"})
    classifier: ClassifierConfig = field(
        default_factory=ClassifierConfig, metadata={"help": "mask classifier model and thresholds"}
    )
    tracker: TrackerConfig = field(default_factory=TrackerConfig, metadata={"help": "following people across frames"})
    alerts: AlertConfig = field(default_factory=AlertConfig, metadata={"help": "which people raise an alert"})
    mqtt: MqttConfig = field(default_factory=MqttConfig, metadata={"help": "MQTT publishing (off: JSON lines on stdout)"})
    preview: PreviewConfig = field(default_factory=PreviewConfig, metadata={"help": "live MJPEG preview for aiming"})
    # Where the config came from (not a YAML key): for messages and resolving paths.
    source_file: Optional[str] = field(default=None, metadata={"internal": True})


class ConfigError(Exception):
    """A user-caused configuration problem; ``str()`` is the whole message for the user."""


def _is_optional(tp: Any) -> Tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != len(typing.get_args(tp)):
            if len(args) != 1:
                raise TypeError(f"only Optional[X] unions are supported, not {tp}")
            return True, args[0]
        raise TypeError(f"only Optional[X] unions are supported, not {tp}")
    return False, tp


def _type_name(tp: Any) -> str:
    """A short human name of a field type for messages ("a number", "a list of text" ...)."""
    optional, inner = _is_optional(tp)
    if optional:
        return f"{_type_name(inner)} or null"
    origin = typing.get_origin(inner)
    if inner is bool:
        return "true or false"
    if inner is int:
        return "a whole number"
    if inner is float:
        return "a number"
    if inner is str:
        return "text"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(inner))
    if origin in (list, List):
        return f"a list of {_type_name(typing.get_args(inner)[0])}"
    if origin in (dict, Dict):
        return f"a mapping of name to {_type_name(typing.get_args(inner)[1])}"
    if dataclasses.is_dataclass(inner):
        return "a mapping (section)"
    return str(inner)


class _Loader:
    """Converts parsed YAML into dataclasses, remembering where each key was written."""

    def __init__(self, file: str, lines: Mapping[KeyPath, int], base_dir: Path) -> None:
        self.file = file
        self.lines = lines
        self.base_dir = base_dir

    def error(self, path: KeyPath, problem: str, fix: str) -> ConfigError:
        key = ".".join(path) if path else "(top level)"
        line = self._line(path)
        where = f"{self.file}:{line}" if line else self.file
        return ConfigError(f"{where}: `{key}`: {problem}\n  fix: {fix}")

    def _line(self, path: KeyPath) -> Optional[int]:
        # The nearest written ancestor, for keys that were left to their defaults.
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def build(self, cls: Type[T], data: Any, path: KeyPath) -> T:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise self.error(path, f"expected a mapping (section), got {_describe(data)}",
                             f"write `{path[-1] if path else 'key'}:` followed by indented `key: value` lines")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
        hints = typing.get_type_hints(cls)
        kwargs: Dict[str, Any] = {}
        for key, value in data.items():
            kpath = path + (str(key),)
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                hint = f"did you mean `{close[0]}`?" if close else "remove it"
                known = ", ".join(fields)
                raise self.error(kpath, f"unknown key (this section has: {known})", hint)
            f = fields[key]
            kwargs[key] = self.convert(hints[key], value, kpath, f.metadata)
        for name, f in fields.items():
            # Defaults that are paths resolve like written ones: against the config's folder.
            if name not in kwargs and f.metadata.get("path") and isinstance(f.default, str):
                kwargs[name] = self._resolve(f.default)
            elif name not in kwargs and dataclasses.is_dataclass(hints[name]):
                kwargs[name] = self.build(hints[name], {}, path + (name,))
        try:
            return cls(**kwargs)
        except ValueError as exc:  # a section's __post_init__ check
            name = _field_in_message(cls, str(exc))
            where = path + (name,) if name else path
            raise self.error(where, str(exc), _help_fix(cls, name)) from None
        except TypeError as exc:  # a required field left out
            raise self.error(path, str(exc), "add the missing key") from None

    def convert(self, tp: Any, value: Any, path: KeyPath, meta: Mapping[str, Any]) -> Any:
        optional, inner = _is_optional(tp)
        helptext = meta.get("help")
        fix_tail = f" ({helptext})" if helptext else ""
        if value is None:
            if optional:
                return None
            if dataclasses.is_dataclass(inner):
                return self.build(inner, {}, path)
            raise self.error(path, f"is empty; expected {_type_name(inner)}",
                             f"give it a value{fix_tail}, or delete the line to use the default")
        origin = typing.get_origin(inner)
        bad = lambda: self.error(  # noqa: E731
            path, f"expected {_type_name(inner)}, got {_describe(value)}", f"write {_type_name(inner)}{fix_tail}"
        )
        if dataclasses.is_dataclass(inner):
            return self.build(inner, value, path)
        if inner is bool:
            if not isinstance(value, bool):
                raise bad()
            return value
        if inner is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad()
            return value
        if inner is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad()
            return float(value)
        if inner is str:
            # YAML reads `source: 0` as a number; text fields take it as written.
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise bad()
            return self._resolve(value) if meta.get("path") else value
        if origin is typing.Literal:
            allowed = typing.get_args(inner)
            if value not in allowed:
                close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
                fix = f"did you mean `{close[0]}`?" if close else f"use one of {', '.join(map(str, allowed))}"
                raise self.error(path, f"{value!r} is not one of {', '.join(map(repr, allowed))}", fix)
            return value
        if origin in (list, List):
            if not isinstance(value, list):
                raise bad()
            (item,) = typing.get_args(inner)
            return [self.convert(item, v, path + (str(i),), meta) for i, v in enumerate(value)]
        if origin in (dict, Dict):
            if not isinstance(value, Mapping):
                raise bad()
            _, item = typing.get_args(inner)
            return {str(k): self.convert(item, v, path + (str(k),), meta) for k, v in value.items()}
        raise TypeError(f"config loader: unsupported field type {tp} at {'.'.join(path)}")

    def _resolve(self, value: str) -> str:
        """Resolve a relative filesystem path against the config file's folder."""
        if not value or os.path.isabs(value) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
            return value
        if value.isdigit():
            return value  # a camera index
        expanded = os.path.expanduser(value)
        if expanded != value:
            return expanded
        candidate = self.base_dir / value
        try:
            exists = candidate.exists()
        except (OSError, ValueError):  # a name too long or with a NUL byte: not an existing file
            exists = False
        # A bare word ("picamera2") is a name, not a file, unless such a file exists.
        if exists or any(c in value for c in "/\\.*?["):
            return str(candidate)
        return value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}` (true/false)"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _field_in_message(cls: type, message: str) -> Optional[str]:
    """The field a section's own check complained about (the first field named in its message)."""
    best: Optional[Tuple[int, str]] = None
    for f in dataclasses.fields(cls):
        m = re.search(rf"(?<![\w-]){re.escape(f.name)}(?![\w-])", message)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), f.name)
    return best[1] if best else None


def _help_fix(cls: type, name: Optional[str]) -> str:
    """The fix for a value a section rejected: the field's help text."""
    for f in dataclasses.fields(cls):
        if f.name == name and f.metadata.get("help"):
            return f"set `{f.name}` to a valid value: {f.metadata['help']}"
    return "correct the values of this section"


def _key_lines(node: yaml.Node, path: KeyPath, out: Dict[KeyPath, int]) -> None:
    """Record the 1-based line of every key in a composed YAML tree."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            kpath = path + (str(key_node.value),)
            out[kpath] = key_node.start_mark.line + 1
            _key_lines(value_node, kpath, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            kpath = path + (str(i),)
            out[kpath] = item.start_mark.line + 1
            _key_lines(item, kpath, out)


def _duplicate_key(node: yaml.Node, path: KeyPath) -> Optional[Tuple[KeyPath, int]]:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            k = str(key_node.value)
            if k in seen:
                return path + (k,), key_node.start_mark.line + 1
            seen.add(k)
            dup = _duplicate_key(value_node, path + (k,))
            if dup:
                return dup
    return None


def parse(text: str, file: str = "<config>", base_dir: Optional[Path] = None) -> Config:
    """Build a :class:`Config` from YAML text; raises :class:`ConfigError` on any user mistake."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}\n  fix: check indentation and quoting on that line")
    lines: Dict[KeyPath, int] = {}
    if node is not None:
        dup = _duplicate_key(node, ())
        if dup:
            raise ConfigError(f"{file}:{dup[1]}: `{'.'.join(dup[0])}`: written twice\n  fix: keep one of them")
        _key_lines(node, (), lines)
    loader = _Loader(file, lines, base_dir or Path.cwd())
    cfg = loader.build(Config, data, ())
    cfg.source_file = file
    return cfg


def load_dataclass(cls: Type[T], data: Any, file: str = "<config>", base_dir: Optional[Path] = None,
                   lines: Optional[Mapping[KeyPath, int]] = None) -> T:
    """Convert a parsed mapping into any config dataclass with the same checks as :func:`parse`."""
    return _Loader(file, lines or {}, base_dir or Path.cwd()).build(cls, data, ())


def load(path: os.PathLike | str) -> Config:
    """Read and validate a config file; relative paths in it resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file\n  fix: pass --config PATH, or copy config.yaml there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}\n  fix: check the file's permissions and encoding") from None
    return parse(text, str(p), p.resolve().parent)


def describe(cls: type = Config, prefix: str = "") -> List[str]:
    """One line per key: path, type, default and help (for ``check-config --explain``)."""
    out: List[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.append(f"{key}:  # {f.metadata.get('help', '')}")
            out.extend(describe(tp, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        out.append(f"{key} = {default!r}  ({_type_name(tp)}) {f.metadata.get('help', '')}".rstrip())
    return out


# --- discovery ----------------------------------------------------------------------------


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def find_config(explicit: Optional[str]) -> Optional[Path]:
    """The config to use: --config, $MASKWATCH_CONFIG, ./config.yaml, the checkout's, /etc/maskwatch."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("MASKWATCH_CONFIG")
    if env:
        return Path(env)
    for p in (Path.cwd() / "config.yaml", repo_root() / "config.yaml", Path("/etc/maskwatch/config.yaml")):
        if p.is_file():
            return p
    return None


def load_config(explicit: Optional[str]) -> Config:
    path = find_config(explicit)
    if path is None:
        # No file anywhere: defaults, with model paths relative to the checkout.
        return parse("{}", "<defaults>", repo_root())
    return load(path)


__all__ = ["Config", "ConfigError", "READY_ANYWAY_S", "RuntimeConfig", "describe", "find_config", "load", "load_config", "load_dataclass", "parse",
           "repo_root"]
