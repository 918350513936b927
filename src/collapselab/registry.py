"""One small registry for every extension point (corpora, backends, packaged models, metrics).

Entries are registered with a decorator; a duplicate name is an error and an unknown name gets a
"did you mean" suggestion. Values may be registered lazily as ``"module:attr"`` strings so that
listing a registry never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from collapselab.errors import CollapselabError

T = TypeVar("T")


class UnknownNameError(CollapselabError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A named collection of factories with descriptions.

    >>> corpora = Registry("corpus")
    >>> @corpora.register("austen", description="Jane Austen's novels")
    ... def load_austen(**kw): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._info: dict[str, dict[str, str]] = {}

    def register(self, name: str, *, description: str = "", **info: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, description=description, **info)
            return obj

        return decorator

    def add(self, name: str, obj: T | str, *, description: str = "", **info: str) -> None:
        """Register ``obj`` (or a lazy ``"module:attr"`` reference) under ``name``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._info[name] = {"description": description, **info}

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        obj = self._entries[name]
        if isinstance(obj, str):  # lazy reference, resolved on first use
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
        return obj  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(self._entries)) or "none"
        return f"unknown {self.kind} {name!r}{hint} (known: {known})"

    def info(self, name: str) -> dict[str, str]:
        return dict(self._info[name])

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def in_order(self) -> list[str]:
        """The names in the order they were registered (for registries whose order means
        something, such as stage kinds: inputs before consumers)."""
        return list(self._entries)
