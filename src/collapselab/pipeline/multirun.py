"""Sweeps from the command line: ``collapselab run CONFIG -m lora.r=8,16 decoding.temperature=0.7,1.0``.

With ``-m`` (``--multirun``, Hydra's convention) every override whose value holds a top-level
comma is a sweep *axis*; the product of the axes is the set of *points*, each a whole experiment
(the config with the fixed overrides and one value of every axis). The points run one after
another into ONE run folder, so every stage two points have in common (same settings, same
inputs: same key) runs once, by content addressing.

Splitting a value (:func:`split_values`) — a comma separates values, except:

* inside brackets or braces (YAML flow lists and mappings): ``conditions=[vanilla,human]`` is one
  value, ``conditions=[vanilla,human],[vanilla,single:a]`` two;
* inside a quoted string that starts a value (YAML's quotes): ``decoding.system_prompt='Be brief,
  please'`` is one value (the shell needs the quotes kept: ``"decoding.system_prompt='a, b'"``);
* escaped as ``\\,``: ``conditions.2=multi:a\\,b`` is the one value ``multi:a,b``.

Each value is then read as YAML, like any override. An empty value (``8,,16``, ``8,``), an
unbalanced bracket or quote, a key given twice or a value given twice in one axis is an error.
A value meant to hold a comma but written without quotes (``conditions.2=multi:a,b``) splits;
if the halves do not validate, the error names the point and the field and says how to quote.

Folder layout (``RUN_DIR`` is the run folder of :mod:`collapselab.store.run`)::

    RUN_DIR/
      stages/…                     every point's stages, each stage once
      experiment.yaml              the last point that ran (the executor writes it)
      sweep/
        sweep.json                 the command: config, fixed overrides, axes, points
        .lock                      held for the whole sweep
        <point>/experiment.yaml    the point's resolved config (written before anything runs)
        <point>/report/            the point's report (report.html, results.json, …)
        <point>/point.json         written last: the point is done (stage counts, spec hash)
        comparison.{md,html,csv}   every point × target × condition (:mod:`collapselab.report.comparison`)

A point's name is made of its axis values (``lora.r-8_decoding.temperature-0.7``, file-safe by
:func:`collapselab.naming.slug`). Rerunning the same command resumes: a point whose
``point.json`` matches its config and whose stages are all done is skipped, the others run
(their finished stages are skipped by the executor).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collapselab.config.load import load_config, parse_override, spec_to_yaml
from collapselab.config.spec import ExperimentSpec
from collapselab.errors import CollapselabError, ConfigError, RunLockedError
from collapselab.naming import slug
from collapselab.pipeline.stage import Stage

SWEEP_DIR = "sweep"
MANIFEST = "sweep.json"
POINT_RECORD = "point.json"
#: longest point name before it is cut and given a hash (file names stay well under 255 bytes)
MAX_NAME = 100
_OPEN = {"[": "]", "{": "}"}
_CLOSE = {"]": "[", "}": "{"}
QUOTING_HINT = ("with -m, an unquoted comma separates sweep values: to keep a comma inside a value, quote it "
                "(\"key='a,b'\") or escape it (key=a\\,b)")


@dataclass(frozen=True)
class Axis:
    """One swept setting: its dotted key and its values as written (each read as YAML later)."""

    key: str
    values: tuple[str, ...]


@dataclass
class SweepPoint:
    """One point: its 1-based index, file-safe name, axis values, overrides and validated spec."""

    index: int
    name: str
    settings: dict[str, str]  # axis key -> the value as written
    overrides: tuple[str, ...]  # fixed overrides, then the point's
    spec: ExperimentSpec
    stages: list[Stage]
    shared: int = 0  # stages an earlier point of the sweep has too (they run once)

    def folder(self, run_dir: str | Path) -> Path:
        return Path(run_dir) / SWEEP_DIR / self.name

    def label(self) -> str:
        """``lora.r=8 decoding.temperature=0.7``: the point's settings as overrides."""
        return " ".join(f"{k}={v}" for k, v in self.settings.items())


@dataclass
class Sweep:
    """A validated sweep: the config, the overrides that are not axes, the axes and the points."""

    config: Path
    name: str  # the experiment's name without a point suffix (the default run folder's name)
    fixed: tuple[str, ...]
    axes: tuple[Axis, ...]
    points: list[SweepPoint]

    @property
    def stage_count(self) -> int:
        """Distinct stages over all points (each runs once)."""
        return len({(s.kind, s.ref.dirname) for p in self.points for s in p.stages})


@dataclass
class PointResult:
    """What running one point did: ``skipped`` when it was done already (nothing ran)."""

    point: SweepPoint
    skipped: bool
    ran: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unverified: list[str] = field(default_factory=list)


# -- parsing ---------------------------------------------------------------------------------------
def split_values(text: str, origin: str = "override") -> list[str]:
    """Split an override's value on its top-level commas (see the module docstring for the rule);
    each piece stripped. Raises ConfigError naming ``origin`` on an empty piece or an unbalanced
    bracket or quote."""
    pieces: list[str] = []
    current: list[str] = []
    stack: list[str] = []  # open brackets
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if quote == '"' and ch == "\\" and i + 1 < len(text):  # YAML's double-quoted escapes
                current.append(text[i + 1])
                i += 1
            elif ch == quote:
                if quote == "'" and text[i + 1:i + 2] == "'":  # '' is a quote inside single quotes
                    current.append("'")
                    i += 1
                else:
                    quote = None
        elif ch == "\\" and text[i + 1:i + 2] == ",":
            current.append(",")
            i += 1
        elif ch in "'\"" and _starts_scalar(current, stack):
            quote = ch
            current.append(ch)
        elif ch in _OPEN:
            stack.append(ch)
            current.append(ch)
        elif ch in _CLOSE:
            if not stack or stack[-1] != _CLOSE[ch]:
                raise ConfigError(f"{origin}: unbalanced {ch!r} in {text!r}")
            stack.pop()
            current.append(ch)
        elif ch == "," and not stack:
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if quote:
        raise ConfigError(f"{origin}: unclosed {quote} quote in {text!r}")
    if stack:
        raise ConfigError(f"{origin}: unclosed {stack[-1]!r} in {text!r}")
    pieces.append("".join(current))
    pieces = [p.strip() for p in pieces]
    if len(pieces) > 1 and any(not p for p in pieces):
        raise ConfigError(f"{origin}: an empty value in {text!r} (two commas in a row, or one at an end); "
                          "quote an empty string: ''")
    return pieces


def _starts_scalar(current: list[str], stack: list[str]) -> bool:
    """A quote opens a quoted string only where a YAML scalar starts: at the start of a value, or
    after ``[``, ``{``, ``,`` or ``:`` inside a flow collection (``don't`` has no quote)."""
    before = "".join(current).rstrip()
    return not before or bool(stack) and before[-1] in "[{,:"


def parse_axes(overrides: Sequence[str]) -> tuple[tuple[str, ...], tuple[Axis, ...]]:
    """Split overrides into the fixed ones (one value, passed on as written) and the axes (several
    values). A key given twice, or a value given twice in one axis, is an error."""
    fixed: list[str] = []
    axes: list[Axis] = []
    seen: set[str] = set()
    for item in overrides:
        key = _key(item)  # the value is read only after splitting: "a,b" as a whole may not be YAML
        if key in seen:
            raise ConfigError(f"override {item!r}: {key} is given twice; give every value of a sweep axis in "
                              f"one override ({key}=A,B)")
        seen.add(key)
        values = split_values(item.partition("=")[2], f"override {item!r}")
        if len(values) == 1:  # as written, but with \, unescaped (YAML would keep the backslash)
            fixed.append(item if "\\," not in item else f"{key}={values[0]}")
            continue
        parsed = [parse_override(f"{key}={v}")[1] for v in values]
        for i, value in enumerate(parsed):
            if any(_same(value, earlier) for earlier in parsed[:i]):
                raise ConfigError(f"override {item!r}: {key}: the value {values[i]!r} is given twice")
        axes.append(Axis(key, tuple(values)))
    return tuple(fixed), tuple(axes)


def _key(item: str) -> str:
    """The dotted key of ``key.sub=value`` (every part non-empty)."""
    key, eq, _ = item.partition("=")
    parts = [k.strip() for k in key.split(".")]
    if not eq or not all(parts):
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    return ".".join(parts)


def _same(a: Any, b: Any) -> bool:
    """The same YAML value (``8`` twice; not ``8`` and ``'8'``)."""
    return type(a) is type(b) and a == b


# -- points ----------------------------------------------------------------------------------------
def point_names(settings: Sequence[dict[str, str]]) -> list[str]:
    """File-safe, unique names from the points' settings: ``key-value`` parts joined by ``_``
    (``lora.r-8_decoding.temperature-0.7``); a long name is cut and given a hash of its settings;
    names that still collide get ``-2``, ``-3``… in order."""
    names: list[str] = []
    for point in settings:
        name = "_".join(f"{slug(k)}-{slug(v, default='empty')}" for k, v in point.items())
        if len(name) > MAX_NAME:
            digest = hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:10]
            name = f"{name[:MAX_NAME - 11].rstrip('_-.')}-{digest}"
        unique, n = name, 1
        while unique in names:
            n += 1
            unique = f"{name}-{n}"
        names.append(unique)
    return names


def expand(config: str | Path, overrides: Sequence[str], *, use_env: bool = True) -> Sweep:
    """Parse the axes, build every point's spec and stage graph and validate them all, before
    anything runs: one bad point fails the whole sweep with an error naming the point and field."""
    from collapselab.pipeline.validate import validate_experiment

    config = Path(config)
    fixed, axes = parse_axes(overrides)
    if not axes:
        raise ConfigError("--multirun/-m: no override has several comma-separated values (e.g. lora.r=8,16); "
                          "run without -m for a single experiment")
    combos = [dict(zip([a.key for a in axes], values, strict=True))
              for values in itertools.product(*(a.values for a in axes))]
    names = point_names(combos)
    points: list[SweepPoint] = []
    seen: set[tuple[str, str]] = set()
    base_name = ""
    for index, (settings, name) in enumerate(zip(combos, names, strict=True), start=1):
        point_overrides = (*fixed, *(f"{k}={v}" for k, v in settings.items()))
        where = f"sweep point {index}/{len(combos)} {name} ({' '.join(f'{k}={v}' for k, v in settings.items())})"
        try:
            spec = load_config(config, point_overrides, use_env=use_env)
            base_name = base_name or spec.name
            spec = _renamed(spec, f"{spec.name}-{name}")
            stages = validate_experiment(spec)
        except CollapselabError as exc:
            raise _at_point(exc, where, axes) from None
        refs = {(s.kind, s.ref.dirname) for s in stages}
        points.append(SweepPoint(index, name, settings, point_overrides, spec, stages, len(refs & seen)))
        seen |= refs
    return Sweep(config, base_name, fixed, axes, points)


def _renamed(spec: ExperimentSpec, name: str) -> ExperimentSpec:
    """The spec under another name (a title only: no stage key holds the name), validated whole."""
    data = spec.model_dump(mode="json")
    data["name"] = name
    return ExperimentSpec.model_validate(data)


def _names_field(message: str, key: str) -> bool:
    """Whether an error is about the swept field ``key`` or a section holding it (``conditions:``
    for ``conditions.1``), and not because the key does not exist."""
    parts = key.split(".")
    if f"{key}: unknown key" in message:
        return False
    return any(f"{'.'.join(parts[:i])}:" in message for i in range(len(parts), 0, -1))


def _at_point(exc: CollapselabError, where: str, axes: Sequence[Axis]) -> CollapselabError:
    """The same kind of error, its message prefixed with the point; with a quoting hint when it
    names a swept field (the value may have been split at a comma meant to stay)."""
    message = f"{where}: {exc}"
    if any(_names_field(str(exc), a.key) for a in axes):
        message += f"\n  ({QUOTING_HINT})"
    try:
        return type(exc)(message)
    except TypeError:  # an error class with another signature: the message matters, not the class
        return ConfigError(message)


# -- the sweep's files -----------------------------------------------------------------------------
def spec_digest(spec: ExperimentSpec) -> str:
    return hashlib.sha256(spec_to_yaml(spec).encode()).hexdigest()


def manifest(sweep: Sweep) -> dict[str, Any]:
    """``sweep.json``: what was swept and the points, in order."""
    return {
        "config": str(sweep.config), "name": sweep.name, "fixed": list(sweep.fixed),
        "axes": [{"key": a.key, "values": list(a.values)} for a in sweep.axes],
        "points": [{"index": p.index, "name": p.name, "settings": p.settings, "overrides": list(p.overrides),
                    "stages": len(p.stages), "shared": p.shared} for p in sweep.points],
    }


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's ``sweep/sweep.json``, or None when the folder holds no sweep."""
    path = Path(run_dir) / SWEEP_DIR / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable sweep manifest ({exc})") from None
    return data if isinstance(data, dict) else None


def load_points(run_dir: str | Path) -> list[SweepPoint]:
    """The points of the sweep last run into ``run_dir``, each from its ``experiment.yaml``
    (for ``status`` and ``report`` on a sweep folder)."""
    from collapselab.pipeline.graph import build_graph

    data = read_manifest(run_dir) or {}
    points = []
    for row in data.get("points") or []:
        folder = Path(run_dir) / SWEEP_DIR / str(row["name"])
        spec = load_config(folder / "experiment.yaml", use_env=False)
        points.append(SweepPoint(int(row["index"]), str(row["name"]), dict(row.get("settings") or {}),
                                 tuple(row.get("overrides") or ()), spec, build_graph(spec),
                                 int(row.get("shared") or 0)))
    return points


def read_record(folder: Path) -> dict[str, Any] | None:
    """A point's ``point.json`` (None until the point finished)."""
    return _read_json(folder / POINT_RECORD)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_point_done(point: SweepPoint, run_dir: str | Path) -> bool:
    """Finished with this very config: ``point.json`` records the spec's hash, the report's
    ``results.json`` exists and every stage is done (a deleted stage folder reruns the point)."""
    from collapselab.store.run import RunStore

    folder = point.folder(run_dir)
    record = read_record(folder)
    if not record or record.get("spec_sha256") != spec_digest(point.spec):
        return False
    if not (folder / "report" / "results.json").is_file():
        return False
    store = RunStore(run_dir)
    return all(store.is_done(s.ref) for s in point.stages)


@contextmanager
def sweep_lock(run_dir: str | Path):
    """Hold ``RUN_DIR/sweep/.lock`` for the whole sweep: two sweeps into one folder would
    interleave their points (each point also takes the run folder's own lock while it runs)."""
    from filelock import FileLock, Timeout

    folder = Path(run_dir) / SWEEP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunLockedError(f"{run_dir}: another sweep is running into this run folder; wait for it to "
                             "finish or use another run folder") from None
    try:
        yield
    finally:
        lock.release()


# -- running ---------------------------------------------------------------------------------------
class SweepProgress:
    """Callbacks of :func:`run_sweep` (no-op by default; the CLI prints which point of how many)."""

    def point_started(self, point: SweepPoint, total: int) -> AbstractContextManager:
        """A context manager yielding the executor's :class:`StageProgress` for this point."""
        from collapselab.executors import StageProgress

        return nullcontext(StageProgress())

    def point_finished(self, result: PointResult, total: int) -> None: ...


def prepare(sweep: Sweep, run_dir: str | Path) -> None:
    """Write ``sweep.json`` and every point's ``experiment.yaml`` (before anything runs, so
    ``status`` knows every point of a sweep under way)."""
    from collapselab.store.atomic import write_json, write_text

    write_json(Path(run_dir) / SWEEP_DIR / MANIFEST, manifest(sweep))
    for point in sweep.points:
        write_text(point.folder(run_dir) / "experiment.yaml", spec_to_yaml(point.spec))


def run_point(point: SweepPoint, run_dir: str | Path, stage_progress=None) -> PointResult:
    """Run one point's stages (done ones are skipped), write its report into
    ``sweep/<point>/report/`` and then ``point.json``."""
    from collapselab.executors import run_stages
    from collapselab.store.atomic import write_json

    report = run_stages(point.spec, run_dir, progress=stage_progress, stages=point.stages)
    folder = point.folder(run_dir)
    write_point_report(point, run_dir)
    result = PointResult(point, False, list(report.ran), list(report.skipped), report.seconds,
                         list(report.unverified))
    write_json(folder / POINT_RECORD, {
        "index": point.index, "name": point.name, "settings": point.settings,
        "spec_sha256": spec_digest(point.spec), "stages": len(point.stages), "shared": point.shared,
        "ran": len(result.ran), "already_done": len(result.already_done), "seconds": round(report.seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return result


def write_point_report(point: SweepPoint, run_dir: str | Path) -> dict[str, Path]:
    """The point's report (the same one ``collapselab report`` writes for a run) in
    ``sweep/<point>/report/``. Unlike ``run``, also without Experiment 1: the comparison reads
    its ``results.json``."""
    from collapselab.report.inputs import collect
    from collapselab.report.write import write_report

    return write_report(collect(point.spec, run_dir), point.folder(run_dir) / "report")


def run_sweep(sweep: Sweep, run_dir: str | Path, progress: SweepProgress | None = None) -> list[PointResult]:
    """Run every point in order into ``run_dir`` (points done already are skipped, after the
    size check of their stages), then write the comparison. Holds the sweep lock throughout."""
    from collapselab.executors.base import check_done_stages
    from collapselab.store.run import RunStore

    progress = progress or SweepProgress()
    results: list[PointResult] = []
    total = len(sweep.points)
    with sweep_lock(run_dir):
        prepare(sweep, run_dir)
        for point in sweep.points:
            if is_point_done(point, run_dir):
                unverified = check_done_stages(RunStore(run_dir), point.stages)
                result = PointResult(point, True, [], [s.label for s in point.stages], 0.0, unverified)
            else:
                with progress.point_started(point, total) as stage_progress:
                    result = run_point(point, run_dir, stage_progress)
            results.append(result)
            progress.point_finished(result, total)
        write_sweep_comparison(run_dir)
    return results


def write_sweep_comparison(run_dir: str | Path) -> dict[str, Path]:
    """``sweep/comparison.{csv,md,html}`` of the sweep last run into ``run_dir``, from the files
    its points wrote (:mod:`collapselab.report.comparison`); a point not finished is listed without
    results."""
    from collapselab.config.spec import DEFAULT_PRIMARY
    from collapselab.report.comparison import PointInput, build_comparison, write_comparison

    manifest = read_manifest(run_dir)
    if manifest is None:
        raise ConfigError(f"{run_dir}: no sweep in this run folder (no {SWEEP_DIR}/{MANIFEST})")
    inputs = []
    for row in manifest.get("points") or []:
        folder = Path(run_dir) / SWEEP_DIR / str(row["name"])
        try:
            primary = load_config(folder / "experiment.yaml", use_env=False).stats.primary_endpoints
        except CollapselabError:  # a point folder edited by hand: the study's endpoints
            primary = dict(DEFAULT_PRIMARY)
        inputs.append(PointInput(row, read_record(folder), _read_json(folder / "report" / "results.json"), primary))
    return write_comparison(build_comparison(manifest, inputs), Path(run_dir) / SWEEP_DIR)


# -- status and report on a sweep folder -----------------------------------------------------------
@dataclass
class PointStatus:
    """A point of the sweep in a run folder: each of its stages with its state, and whether the
    point finished (``point.json`` for this config)."""

    point: SweepPoint
    stages: list[tuple[Stage, str]]
    finished: bool


def sweep_status(run_dir: str | Path) -> list[PointStatus]:
    """Every point of the sweep last run into ``run_dir`` with its stages' states (done, running,
    interrupted, missing: :func:`collapselab.executors.stage_status`)."""
    from collapselab.executors import stage_status

    out = []
    for point in load_points(run_dir):
        record = read_record(point.folder(run_dir))
        finished = bool(record) and record.get("spec_sha256") == spec_digest(point.spec)
        out.append(PointStatus(point, stage_status(point.spec, run_dir), finished))
    return out


def rewrite_reports(run_dir: str | Path) -> tuple[list[SweepPoint], list[SweepPoint], dict[str, Path]]:
    """``collapselab report`` on a sweep folder: rewrite the report of every point whose stages
    are all done, then the comparison. Returns (rewritten, left out, the comparison's files)."""
    from collapselab.store.run import RunStore

    store = RunStore(run_dir)
    written, left = [], []
    for point in load_points(run_dir):
        if all(store.is_done(s.ref) for s in point.stages):
            write_point_report(point, run_dir)
            written.append(point)
        else:
            left.append(point)
    return written, left, write_sweep_comparison(run_dir)
