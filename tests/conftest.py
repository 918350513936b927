"""Shared fixtures: offline environment, a tiny random-init model built once per session."""

from __future__ import annotations

import os

import pytest

# Never wait on a network timeout: everything in the tests is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests (numbers that depend on the thread count stay put;
    the 2-core machine is not oversubscribed by child processes), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random-init Llama chat model (ChatML template) saved as safetensors."""
    from collapselab.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory):
    """The same tiny model without a chat template (a 'base' model)."""
    from collapselab.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat_template=False, seed=1)


E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e") + os.sep


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e runs a whole pipeline (on the real packaged SmolLM2, or killed and
    resumed): mark it ``slow`` (left out of the quick loop, ``-m "not slow"``). Elsewhere a test
    carries the mark itself."""
    for item in items:
        if str(item.path).startswith(E2E):
            item.add_marker(pytest.mark.slow)
