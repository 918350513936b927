"""Load an experiment config: YAML file < environment < ``dotted.key=value`` overrides.

Every error names the file, the field and (for YAML values) the line, e.g.
``configs/demo.yaml:12: lora.r: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from collapselab.config.spec import ExperimentSpec
from collapselab.errors import ConfigError

ENV_PREFIX = "COLLAPSELAB__"  # COLLAPSELAB__SPLIT__TRAIN_SIZE=40 sets split.train_size


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line number."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _line_index(value_node, path + (str(key_node.value),), out)
            out[path + (str(key_node.value),)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (str(i),), out)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as YAML, so ``3`` is an int)."""
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"override {text!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def _set_path(data: dict, keys: list[str], value: Any, origin: str) -> None:
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_index(key, keys, origin)]
            continue
        if key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{origin}: {'.'.join(keys[: i + 1])} is not a section")
    last = keys[-1]
    if isinstance(node, list):
        node[_index(last, keys, origin)] = value
    else:
        node[last] = value


def _index(key: str, keys: list[str], origin: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise ConfigError(f"{origin}: {'.'.join(keys)}: {key!r} is not a list index") from None


def env_overrides(environ: dict[str, str] | None = None) -> list[str]:
    """``COLLAPSELAB__A__B=v`` environment variables as ``a.b=v`` overrides."""
    environ = dict(os.environ) if environ is None else environ
    return [
        f"{name[len(ENV_PREFIX):].lower().replace('__', '.')}={value}"
        for name, value in sorted(environ.items())
        if name.startswith(ENV_PREFIX)
    ]


def load_config(path: str | Path, overrides: Sequence[str] = (), *, use_env: bool = True) -> ExperimentSpec:
    """Read, override and validate an experiment config; raise ConfigError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        lines = _line_index(yaml.compose(text)) if data is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of settings")
    applied = (env_overrides() if use_env else []) + list(overrides)
    for item in applied:
        keys, value = parse_override(item)
        _set_path(data, keys, value, f"override {item!r}")
    return validate_data(data, path, lines, overridden={tuple(parse_override(o)[0]) for o in applied})


def validate_data(
    data: dict, origin: str | Path, lines: dict[tuple, int] | None = None, overridden: set[tuple] | None = None
) -> ExperimentSpec:
    """Validate a config mapping, turning pydantic's errors into one readable ConfigError."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin, lines or {}, overridden or set())) from None


def format_validation_error(exc: ValidationError, origin: str | Path, lines: dict, overridden: set) -> str:
    messages = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        field = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        # the deepest YAML path we know a line for
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        where = f"{origin}:{line}" if line and loc not in overridden else str(origin)
        messages.append(f"{where}: {field}: {msg}")
    return "invalid config\n  " + "\n  ".join(messages)


def spec_to_yaml(spec: ExperimentSpec) -> str:
    """The fully resolved config (all defaults filled in) as YAML."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
