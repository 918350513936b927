"""The one prompt-template subsystem: load (a user's editable file or the packaged one), validate,
render — for every judge that reads a prompt (harm, quality, pairwise, rating).

A template is plain text with ``str.format`` fields. Each template kind (a :class:`TemplateSpec`,
held by its judge in :data:`~collapselab.judges.registry.JUDGES`) needs exactly its fields — e.g.
``{prompt}`` and ``{response}`` for the harm and quality judges, ``{instruction}``, ``{text_a}``,
``{text_b}`` for the pairwise judge — and no others; literal braces must be doubled (``{{`` /
``}}``), as in ``str.format``. Validation happens when the template is loaded, before any model
runs, so a typo such as ``{respones}`` fails at ``validate`` time with the file, the line and the
config field that named the file, not hours into a judging run. Only the template is parsed as a
format string: the texts filled in may contain any braces.

Packaged templates live in ``collapselab/judges/templates/<kind>.txt`` (a data folder without an
``__init__.py``: this module, ``templates.py``, takes precedence on import, and the folder is read
through :mod:`importlib.resources`, so it works from a wheel or a zip too).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from collapselab.errors import ConfigError

# one token of a format string: an escaped brace, a replacement field, or a lone brace (an error)
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TemplateSpec:
    """What a template of one kind must look like: ``name`` (the kind, and the packaged file
    ``templates/<name>.txt`` of ``package``), the exact ``fields`` it fills, and ``config_field``,
    the setting that names a user's file (quoted in errors, e.g. ``preference.pair_template``).
    A judge from a plug-in sets ``package`` to its own package (its ``templates/`` folder)."""

    name: str
    fields: tuple[str, ...]
    config_field: str | None = None
    package: str = "collapselab.judges"

    def describe_fields(self) -> str:
        """The fields as written in a template: ``{prompt}, {response}``."""
        return ", ".join("{" + f + "}" for f in self.fields)


def packaged_template_path(kind: str, package: str = "collapselab.judges") -> str:
    """A readable name for the packaged template of ``kind`` (used in error messages)."""
    return f"{package.replace('.', '/')}/templates/{kind}.txt (packaged)"


def _read_packaged(kind: str, package: str = "collapselab.judges") -> str:
    resource = resources.files(package).joinpath("templates", f"{kind}.txt")
    try:
        return resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{packaged_template_path(kind, package)}: packaged template is missing "
                          "(is the package data installed?)") from None


def _set_by(spec: TemplateSpec) -> str:
    return f" (from {spec.config_field})" if spec.config_field else ""


def _read_file(path: str, spec: TemplateSpec) -> str:
    where = _set_by(spec)
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: template file not found{where}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: template is not UTF-8 text ({exc.reason} at byte {exc.start})"
                          f"{where}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read template ({exc.strerror}){where}") from None


def template_fields(template: str, source: str = "<template>") -> dict[str, int]:
    """The replacement fields of ``template`` mapped to the line of their first use.

    Raises :class:`ConfigError` (naming ``source`` and the line) for a lone ``{`` or ``}``, or for
    a field that is not a plain name (``{}``, ``{0}``, ``{prompt!r}``, ``{prompt:>9}``,
    ``{x.y}``): templates only substitute text, and such a field is almost always an undoubled
    literal brace.
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
            raise ConfigError(f"{source}:{line}: field {token!r} is not a plain name — templates "
                              "take only named fields; write literal braces doubled ('{{' and '}}')")
        found.setdefault(name, line)
    return found


def validate_template(template: str, spec: TemplateSpec, source: str = "<template>") -> None:
    """Check that ``template`` has exactly the fields of ``spec``; :class:`ConfigError` naming
    ``source``, the line and the config field otherwise."""
    try:
        fields = template_fields(template, source)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{_set_by(spec)}") from None
    missing = [f for f in spec.fields if f not in fields]
    if missing:
        raise ConfigError(f"{source}: the {spec.name} template lacks the field(s) "
                          f"{', '.join('{' + f + '}' for f in missing)}{_set_by(spec)}")
    for name, line in fields.items():
        if name not in spec.fields:
            raise ConfigError(f"{source}:{line}: unknown field {{{name}}} — a {spec.name} template takes "
                              f"{spec.describe_fields()}; write literal braces doubled{_set_by(spec)}")


def read_template(spec: TemplateSpec, path: str | None = None) -> str:
    """The text of a ``spec`` template: the file at ``path``, or the packaged
    ``templates/<spec.name>.txt`` when ``path`` is None; validated with :func:`validate_template`."""
    if path is None:
        text, source = _read_packaged(spec.name, spec.package), packaged_template_path(spec.name, spec.package)
    else:
        text, source = _read_file(path, spec), str(path)
    validate_template(text, spec, source)
    return text


def load_template(path: str | None, kind: str) -> str:
    """The validated template of the judge named ``kind`` ("harm", "quality", "pairwise",
    "rating"): the file at ``path``, or the packaged one when None. Shorthand for
    ``JUDGES.get(kind).template(path)``."""
    from collapselab.judges.registry import JUDGES

    if kind not in JUDGES or JUDGES.get(kind).template_spec is None:
        with_template = [n for n in JUDGES if JUDGES.get(n).template_spec is not None]
        close = difflib.get_close_matches(kind, with_template, n=1)
        conversation = kind in JUDGES and JUDGES.get(kind).layout == "conversation"
        hint = (f" ({kind!r} reads the conversation in its model's own chat format)" if conversation
                else f" ({kind!r} reads no prompt)" if kind in JUDGES
                else f"; did you mean {close[0]!r}?" if close else "")
        raise ConfigError(f"unknown judge template kind {kind!r}{hint} (known: {', '.join(with_template)})")
    return JUDGES.get(kind).template(path)


def render(template: str, **fields: str) -> str:
    """Fill a validated template. Field values are inserted verbatim (braces in an answer are not
    interpreted); a field the template uses but ``fields`` lacks is a :class:`ConfigError`, extra
    keyword arguments are ignored."""
    used = template_fields(template)
    missing = [name for name in used if name not in fields]
    if missing:
        raise ConfigError(f"template needs the field(s) {', '.join(missing)}, which were not given")
    return template.format(**fields)
