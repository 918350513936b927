"""Jane Austen's six novels as passage-continuation tasks, available offline.

The text comes from Debian's ``r-cran-janeaustenr`` package (the CRAN package ``janeaustenr``,
MIT; the novels are public domain). Its ``data/`` folder is an R lazy-load database:

* ``Rdata.rdx`` — a gzip'd serialized R list whose ``variables`` element maps each object name
  (``emma``, ``prideprejudice``, ...) to ``(offset, length)`` in ``Rdata.rdb``;
* ``Rdata.rdb`` — the objects back to back, each a 4-byte big-endian uncompressed length followed
  by a zlib stream of one serialized R object: here a character vector, one element per printed
  line of the novel (blank lines between paragraphs, chapter headings on lines of their own).

The ``.deb`` is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no root, no
R): ``apt-get install`` would pull in all of R. Run ``python -m collapselab.corpora.austen`` once
to fetch it into the cache.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

from collapselab.config.spec import CorpusSpec
from collapselab.corpora.base import Record
from collapselab.corpora.continuation import continuation_records, split_paragraphs
from collapselab.errors import DataError
from collapselab.naming import id_slug
from collapselab.paths import cache_root

DEB_PACKAGE = "r-cran-janeaustenr"
ENV_AUSTEN_DIR = "COLLAPSELAB_AUSTEN_DIR"

#: R object name → novel title, in publication order (the order janeaustenr uses).
BOOKS: dict[str, str] = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}

# Where Rdata.rdx sits below the folders a user may point COLLAPSELAB_AUSTEN_DIR at: the data
# folder itself, an R library's package folder, or the root a .deb was extracted into.
_DATA_SUBDIRS = (".", "data", "janeaustenr/data", "usr/lib/R/site-library/janeaustenr/data")

_HEADING = re.compile(r"(chapter|volume)\s+([ivxlc]+|\d+)\.?", re.IGNORECASE)
# Lines that end the novel: what follows is an editor's note, not Austen.
_END_MARKERS = {"the end", "finis", "a note on the text"}


def _find_data_dir(root: Path) -> Path | None:
    for sub in _DATA_SUBDIRS:
        candidate = root / sub
        if (candidate / "Rdata.rdx").is_file() and (candidate / "Rdata.rdb").is_file():
            return candidate.resolve()
    return None


def _how_to_provide(target: Path) -> str:
    return (
        f"To provide it by hand: on a Debian/Ubuntu machine run `apt-get download {DEB_PACKAGE}` and "
        f"`dpkg-deb -x {DEB_PACKAGE}_*.deb {target}` (do not `apt-get install` it: that pulls in all of R), "
        f"or install the CRAN package janeaustenr in R; then set {ENV_AUSTEN_DIR} to the extracted "
        "folder or the R package folder (the one holding data/Rdata.rdx), or copy the extracted "
        f"folder to {target}."
    )


def ensure_austen_data(cache_dir: Path | None = None) -> Path:
    """Return the folder holding janeaustenr's ``Rdata.rdx``/``Rdata.rdb``, fetching it if needed.

    Looks in ``$COLLAPSELAB_AUSTEN_DIR`` when set (and only there), else in
    ``<cache>/janeaustenr/`` with ``cache`` = ``cache_dir``, ``$COLLAPSELAB_CACHE`` or
    ``~/.cache/collapselab``. When the cache lacks it, downloads the Debian package with
    ``apt-get download`` into a temporary folder, unpacks it with ``dpkg-deb -x`` and moves the
    result into place in one rename, so a concurrent or interrupted fetch never leaves a half
    folder. Raises :class:`DataError` saying how to provide the data when that fails.
    """
    explicit = os.environ.get(ENV_AUSTEN_DIR)
    if explicit:
        found = _find_data_dir(Path(explicit).expanduser())
        if found is None:
            raise DataError(
                f"{ENV_AUSTEN_DIR}={explicit}: no janeaustenr data there (looked for Rdata.rdx and "
                f"Rdata.rdb in {', '.join(_DATA_SUBDIRS)} below it). " + _how_to_provide(Path(explicit))
            )
        return found

    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = cache / "janeaustenr"
    found = _find_data_dir(target)
    if found is not None:
        return found
    if target.exists():
        raise DataError(f"{target} exists but holds no janeaustenr data (Rdata.rdx); remove it to "
                        "fetch again. " + _how_to_provide(target))
    _fetch_deb(target)
    found = _find_data_dir(target)
    if found is None:  # the package changed its layout
        raise DataError(f"{DEB_PACKAGE} was unpacked into {target} but holds no data/Rdata.rdx. "
                        + _how_to_provide(target))
    return found


def _fetch_deb(target: Path) -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise DataError(f"Jane Austen's novels are not in {target} and cannot be fetched here: "
                        f"{' and '.join(missing)} not found (not a Debian/Ubuntu system). "
                        + _how_to_provide(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary folder sits next to the target so the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".janeaustenr-") as tmp:
        work = Path(tmp)
        _run(["apt-get", "download", DEB_PACKAGE], cwd=work, target=target)
        debs = sorted(work.glob(f"{DEB_PACKAGE}_*.deb"))
        if not debs:
            raise DataError(f"`apt-get download {DEB_PACKAGE}` produced no .deb. " + _how_to_provide(target))
        extracted = work / "janeaustenr"
        _run(["dpkg-deb", "-x", str(debs[0]), str(extracted)], cwd=work, target=target)
        try:
            extracted.rename(target)
        except OSError:
            # Another process finished first: its copy is as good as ours.
            if _find_data_dir(target) is None:
                raise


def _run(cmd: list[str], cwd: Path, target: Path) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"`{' '.join(cmd)}` failed: {exc}. " + _how_to_provide(target)) from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        missing_lists = "locate package" in output
        hint = " (the package lists may be missing: run `apt-get update`)" if missing_lists else ""
        raise DataError(f"`{' '.join(cmd)}` failed with exit status {done.returncode}{hint}: {output}. "
                        + _how_to_provide(target))


def read_novels(data_dir: Path) -> dict[str, list[str]]:
    """The lines of each novel in ``data_dir`` (``Rdata.rdx``/``.rdb``), keyed by title, in
    publication order."""
    try:
        import rdata  # optional dependency (collapselab[data]); only this loader needs it
    except ImportError as exc:
        raise DataError("reading Jane Austen's novels needs the rdata package: "
                        "pip install 'collapselab[data]'") from exc

    rdx, rdb = data_dir / "Rdata.rdx", data_dir / "Rdata.rdb"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns about the header-less (RDS-style) stream
            index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(rdx.read_bytes()),
                                                                     extension=".rds"))
        variables = {str(name): (int(off), int(length)) for name, (off, length) in index["variables"].items()}
        compression = int(index["compressed"][0])
        blob = rdb.read_bytes()
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise DataError(f"{rdx}: not a readable R lazy-load index ({exc})") from exc
    if compression != 1:
        # R also writes uncompressed (0), bzip2 (2) and xz (3) databases; janeaustenr uses zlib (1).
        raise DataError(f"{rdx}: unsupported compression type {compression} (expected 1, zlib)")
    missing = [name for name in BOOKS if name not in variables]
    if missing:
        raise DataError(f"{rdx}: objects {missing} not found (has {sorted(variables)})")

    novels: dict[str, list[str]] = {}
    for name, title in BOOKS.items():
        offset, length = variables[name]
        try:
            # 4-byte uncompressed length, then one zlib stream holding a serialized character vector
            payload = zlib.decompress(blob[offset + 4: offset + length])
            lines = rdata.conversion.convert(rdata.parser.parse_data(payload, extension=".rds"))
        except (zlib.error, ValueError, TypeError) as exc:
            raise DataError(f"{rdb}: object {name!r} at byte {offset} cannot be read ({exc})") from exc
        novels[title] = [str(line) for line in lines]
    return novels


def novel_paragraphs(lines: list[str], title: str) -> list[str]:
    """The body paragraphs of a novel: from the first chapter heading up to its end marker, without
    chapter/volume headings and ``* * *`` section breaks (title page and editor's notes dropped)."""
    body: list[str] = []
    started = False
    for paragraph in split_paragraphs(lines):
        if _HEADING.fullmatch(paragraph):
            started = True
            continue
        if not started:  # title page, "By Jane Austen", the year, a preface
            continue
        if paragraph.lower() in _END_MARKERS:
            break
        if not paragraph.strip("* "):
            continue
        body.append(paragraph)
    if not started:
        raise DataError(f"janeaustenr {title!r}: no chapter heading found; the data layout has changed")
    return body


def load_austen(spec: CorpusSpec) -> list[Record]:
    """The six novels as continuation tasks (``corpus.kind: austen``).

    One record per paragraph of ``spec.min_chars``..``spec.max_chars`` characters (~2,800 at
    300-700): prompt = an instruction and the paragraph's opening words, response = the rest,
    category = the novel's title, id = ``austen-<novel-slug>-<paragraph index>``. ``spec.path``,
    when given, is the data folder (as ``$COLLAPSELAB_AUSTEN_DIR``); otherwise the cache is used.
    """
    if spec.path:
        data_dir = _find_data_dir(Path(spec.path).expanduser())
        if data_dir is None:
            raise DataError(f"corpus.path {spec.path}: no janeaustenr data (Rdata.rdx) there")
    else:
        data_dir = ensure_austen_data()
    records: list[Record] = []
    for title, lines in read_novels(data_dir).items():
        paragraphs = novel_paragraphs(lines, title)
        records.extend(continuation_records(paragraphs, id_prefix=f"austen-{id_slug(title)}",
                                            category=title, spec=spec))
    return records


def main() -> int:
    """Fetch the data if needed and print where it is (used by the setup script)."""
    try:
        data_dir = ensure_austen_data()
        records = load_austen(CorpusSpec(kind="austen", path=str(data_dir)))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return DataError.exit_code
    print(f"Jane Austen data: {data_dir} ({len(records)} passages with the default settings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
