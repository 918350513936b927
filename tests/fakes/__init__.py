"""Fakes of SDKs that cannot run on these machines, as packages on disk: a child process finds
them through ``PYTHONPATH`` (``tests/fakes`` first), where a fake put into ``sys.modules`` is out
of reach. In the test process they are imported as ``tests.fakes.<name>``."""

from pathlib import Path

#: the folder to put first on a child process's ``PYTHONPATH`` so that ``import vllm`` finds the fake
FAKES = Path(__file__).resolve().parent


def install_vllm(monkeypatch) -> object:
    """Put the fake ``vllm`` (``tests.fakes.vllm``) into ``sys.modules`` under the name ``vllm``,
    for the in-process per-model path; returns the package."""
    import importlib
    import sys

    for suffix in ("", ".lora", ".lora.request", ".distributed", ".distributed.parallel_state"):
        monkeypatch.setitem(sys.modules, "vllm" + suffix, importlib.import_module("tests.fakes.vllm" + suffix))
    return sys.modules["vllm"]
