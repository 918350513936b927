"""The Python half of ``scripts/setup-vllm.sh``: run by the vLLM environment's interpreter, so it
needs the standard library only (``tomllib``: Python 3.11+) and, for version ranges, ``packaging``
(which vLLM's dependencies bring; pip's vendored copy otherwise).

    python scripts/vllm_env.py requirements --extras models,api --exclude torch,transformers [--constraints]
    python scripts/vllm_env.py unchanged BEFORE AFTER
    python scripts/vllm_env.py report --extras models,api

``requirements`` prints collapselab's requirements (core + the extras, ``collapselab[...]`` expanded),
one a line, without the excluded distributions (those vLLM chooses); ``--constraints`` writes them
as a pip constraints file (no extras). ``unchanged`` compares two ``pip list --format=freeze``
snapshots and fails if a package of the first changed version or disappeared. ``report`` prints
vLLM's, torch's and transformers' versions and every requirement whose installed version is
outside collapselab's range (a note, not an error: vLLM's choice stands), and fails if a
requirement is not installed at all.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def normalize(name: str) -> str:
    """PEP 503's normal form of a distribution name (``Sentence_Transformers`` → ``sentence-transformers``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(line: str) -> tuple[str, list[str], str]:
    """(name, extras, the rest: version specifiers and marker) of a PEP 508 requirement."""
    match = _NAME.match(line)
    if match is None:
        raise ValueError(f"not a requirement: {line!r}")
    extras = [e.strip() for e in (match.group(2) or "[]")[1:-1].split(",") if e.strip()]
    return match.group(1), extras, line[match.end():].strip()


def requirements(pyproject: dict, extras: list[str], exclude: set[str] = frozenset()) -> list[str]:
    """collapselab's core requirements and those of ``extras`` (``collapselab[a,b]`` in an extra is
    expanded), in order, without duplicates and without the distributions in ``exclude``."""
    project = pyproject["project"]
    own = normalize(project["name"])
    optional = project.get("optional-dependencies", {})
    excluded = {normalize(n) for n in exclude}
    out: list[str] = []
    seen: set[str] = set()

    def add(lines: list[str]) -> None:
        for line in lines:
            name, sub, _ = split_requirement(line)
            if normalize(name) == own:
                for extra in sub:
                    if extra not in seen:
                        seen.add(extra)
                        add(optional[extra])
            elif normalize(name) not in excluded and line not in out:
                out.append(line)

    add(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"collapselab has no extra {extra!r} (it has: {', '.join(optional)})")
        if extra not in seen:
            seen.add(extra)
            add(optional[extra])
    return out


def as_constraint(line: str) -> str:
    """A requirement as a constraint: pip refuses extras in a constraints file."""
    name, _, rest = split_requirement(line)
    return f"{name}{rest}" if not rest or rest[0] in "<>=!~;" else f"{name} {rest}"


def read_freeze(text: str) -> dict[str, str]:
    """``{normalized name: version}`` from ``pip list --format=freeze`` output."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==", 1)
            out[normalize(name)] = version.strip()
    return out


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """A line for every package of ``before`` whose version differs in ``after`` or that is gone."""
    return [f"{name}: {version} -> {after.get(name, 'removed')}"
            for name, version in sorted(before.items()) if after.get(name) != version]


def _specifier_set():
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover - vLLM's dependencies bring packaging
        from pip._vendor.packaging.specifiers import SpecifierSet
    return SpecifierSet


def _installed() -> dict[str, str]:
    return {normalize(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def _contains(specifiers, version: str) -> bool:
    try:
        return specifiers.contains(version, prereleases=True)
    except ValueError:  # packaging's InvalidVersion: a version PEP 440 cannot read is outside any range
        return False


def report(reqs: list[str], installed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(notes, errors): a note per requirement whose installed version is outside its range (the
    version vLLM chose is kept), an error per requirement that is not installed. Markers are not
    evaluated: collapselab's requirements have none."""
    specifier_set = _specifier_set()
    notes, errors = [], []
    for line in reqs:
        name, _, rest = split_requirement(line)
        spec = rest.split(";", 1)[0].strip()
        version = installed.get(normalize(name))
        if version is None:
            errors.append(f"{name} is not installed (collapselab asks for {line})")
        elif spec and not _contains(specifier_set(spec), version):
            notes.append(f"{name} {version} is outside collapselab's range {spec} (kept: the vLLM environment's)")
    return notes, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("requirements", help="print collapselab's requirements for the vLLM environment")
    req.add_argument("--extras", default="", help="comma-separated extras, e.g. models,api")
    req.add_argument("--exclude", default="", help="comma-separated distributions to leave out (vLLM's)")
    req.add_argument("--constraints", action="store_true", help="as a constraints file (no extras)")
    unc = sub.add_parser("unchanged", help="fail if a package of BEFORE changed version in AFTER")
    unc.add_argument("before", type=Path)
    unc.add_argument("after", type=Path)
    rep = sub.add_parser("report", help="versions, and collapselab's requirements this environment misses")
    rep.add_argument("--extras", default="")
    args = parser.parse_args(argv)

    def extras(text: str) -> list[str]:
        return [e.strip() for e in text.split(",") if e.strip()]

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    if args.command == "requirements":
        lines = requirements(pyproject, extras(args.extras), set(extras(args.exclude)))
        print("\n".join(as_constraint(x) if args.constraints else x for x in lines))
        return 0
    if args.command == "unchanged":
        before = read_freeze(args.before.read_text(encoding="utf-8"))
        after = read_freeze(args.after.read_text(encoding="utf-8"))
        lines = changed(before, after)
        if lines:
            print("installing collapselab changed packages that vLLM installed:", *lines, sep="\n  ", file=sys.stderr)
            return 1
        print(f"unchanged: the {len(before)} packages installed with vLLM")
        return 0
    installed = _installed()
    versions = (f"{name} {installed.get(name, 'not installed')}" for name in ("vllm", "torch", "transformers"))
    print("versions: " + ", ".join(versions))
    notes, errors = report(requirements(pyproject, extras(args.extras)), installed)
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
