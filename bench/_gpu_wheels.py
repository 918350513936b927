"""Unpacking the wheels that bench/gpu.py needs on a machine without a package index (the GPU
machine has torch and transformers but not pydantic or nltk): see scripts/gpu-carry.sh."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path


def _wheel_name(path: Path) -> tuple[str, str, str]:
    """(distribution, version, python tag) from a wheel's file name."""
    parts = path.name[: -len(".whl")].split("-")
    return parts[0], parts[1], parts[-3]


def _version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def install_wheels(wheel_dir: Path, site: Path) -> list[str]:
    """Unpack into ``site`` the wheels whose distribution this Python lacks (typing-extensions
    also when older: pydantic needs a recent one), put ``site`` first on ``sys.path`` and
    ``PYTHONPATH``, and say what was done. A wheel is a zip of importable files; these ones
    have no scripts or data to place, so unpacking is what ``pip install --target`` would do.
    Must run before torch (which imports typing_extensions) is imported."""
    import importlib.metadata as metadata

    if not wheel_dir.is_dir():
        return [f"no {wheel_dir}: nothing unpacked"]
    notes, unpacked = [], []
    this_python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for wheel in sorted(wheel_dir.glob("*.whl")):
        dist, version, tag = _wheel_name(wheel)
        try:
            have = metadata.version(dist)
        except metadata.PackageNotFoundError:
            have = None
        if have is not None and not (dist == "typing_extensions" and _version_tuple(have) < _version_tuple(version)):
            continue
        if tag.startswith("cp") and tag != this_python:
            notes.append(f"{wheel.name}: built for {tag}, this is {this_python}: not unpacked")
            continue
        site.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
        unpacked.append(f"{dist} {version}" + (f" (over {have})" if have else ""))
    if unpacked:
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return notes + [f"unpacked into {site}: {', '.join(unpacked) or 'nothing (all present)'}"]
