"""Judge prompt templates: load (a user's editable file or the packaged one), validate, render.

A template is plain text with ``str.format`` fields. Each judge kind needs exactly the fields in
:data:`TEMPLATE_FIELDS` — ``{prompt}`` (the request) and ``{response}`` (the answer being judged) —
and no others; literal braces must be doubled (``{{`` / ``}}``), as in ``str.format``. Validation
happens when the template is loaded, before any model runs, so a typo such as ``{respones}`` fails
at ``validate`` time with the file and line, not hours into a judging run.

Packaged templates live in ``collapselab/judges/templates/<kind>.txt`` (a data folder without an
``__init__.py``: this module, ``templates.py``, takes precedence on import, and the folder is read
through :mod:`importlib.resources`, so it works from a wheel or a zip too).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from collapselab.errors import ConfigError

#: the fields each judge kind's template must contain (and the only ones it may contain)
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "harm": ("prompt", "response"),
    "quality": ("prompt", "response"),
}

# one token of a format string: an escaped brace, a replacement field, or a lone brace (an error)
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def packaged_template_path(kind: str) -> str:
    """A readable name for the packaged template of ``kind`` (used in error messages)."""
    return f"collapselab/judges/templates/{kind}.txt (packaged)"


def _read_packaged(kind: str) -> str:
    resource = resources.files("collapselab.judges").joinpath("templates", f"{kind}.txt")
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{packaged_template_path(kind)}: packaged template is missing "
                          "(is the package data installed?)") from None


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: template file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: template is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read template ({exc.strerror})") from None


def template_fields(template: str, source: str = "<template>") -> dict[str, int]:
    """The replacement fields of ``template`` mapped to the line of their first use.

    Raises :class:`ConfigError` (naming ``source`` and the line) for a lone ``{`` or ``}``, or for
    a field that is not a plain name (``{}``, ``{0}``, ``{prompt!r}``, ``{prompt:>9}``,
    ``{x.y}``): judge templates only substitute text, and such a field is almost always an
    undoubled literal brace.
    """
    found: dict[str, int] = {}
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        line = template.count("\n", 0, match.start()) + 1
        if match.group(1) is None:
            raise ConfigError(f"{source}:{line}: single {token!r} — write literal braces doubled "
                              f"('{token * 2}')")
        name = match.group(1)
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{source}:{line}: field {token!r} is not a plain name — judge templates "
                              "take only named fields; write literal braces doubled ('{{' and '}}')")
        found.setdefault(name, line)
    return found


def validate_template(template: str, kind: str, source: str = "<template>") -> None:
    """Check that ``template`` has exactly the fields a ``kind`` judge fills (see :data:`TEMPLATE_FIELDS`)."""
    if kind not in TEMPLATE_FIELDS:
        raise ConfigError(f"unknown judge template kind {kind!r} (known: {', '.join(TEMPLATE_FIELDS)})")
    fields = template_fields(template, source)
    needed = TEMPLATE_FIELDS[kind]
    missing = [f for f in needed if f not in fields]
    if missing:
        raise ConfigError(f"{source}: the {kind} template lacks the field(s) "
                          f"{', '.join('{' + f + '}' for f in missing)}")
    for name, line in fields.items():
        if name not in needed:
            allowed = ", ".join("{" + f + "}" for f in needed)
            raise ConfigError(f"{source}:{line}: unknown field {{{name}}} (a {kind} template takes "
                              f"{allowed}; write literal braces doubled)")


def load_template(path: str | None, kind: str) -> str:
    """The text of the ``kind`` ("harm" / "quality") judge template: the file at ``path``, or the
    packaged one when ``path`` is None; validated with :func:`validate_template`."""
    if kind not in TEMPLATE_FIELDS:
        raise ConfigError(f"unknown judge template kind {kind!r} (known: {', '.join(TEMPLATE_FIELDS)})")
    if path is None:
        text, source = _read_packaged(kind), packaged_template_path(kind)
    else:
        text, source = _read_file(path), str(path)
    validate_template(text, kind, source)
    return text


def render(template: str, **fields: str) -> str:
    """Fill a validated template. Field values are inserted verbatim (braces in an answer are not
    interpreted); a field the template uses but ``fields`` lacks is a :class:`ConfigError`, extra
    keyword arguments are ignored."""
    used = template_fields(template)
    missing = [name for name in used if name not in fields]
    if missing:
        raise ConfigError(f"template needs the field(s) {', '.join(missing)}, which were not given")
    return template.format(**fields)
