"""A small name → factory registry with "did you mean" suggestions for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from t2ibias.core.errors import UnknownIdError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str]) -> str:
    """A hint naming the closest choices, or listing all of them when none is close."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "choose one of: " + ", ".join(sorted(choices))


class Registry(Generic[T]):
    """Maps ids to factories. ``kind`` names the registry in error messages ("model", ...)."""

    def __init__(self, kind: str, list_command: str | None = None) -> None:
        self.kind = kind
        self.list_command = list_command
        self._factories: dict[str, Callable[[], T]] = {}

    @classmethod
    def from_folder(cls, kind: str, list_command: str, folder: Path, load: Callable[[Path], T]) -> Registry[T]:
        """One entry per ``*.yaml`` file in ``folder``, named by its file name, loaded on ``get``."""
        reg: Registry[T] = cls(kind, list_command)
        for path in sorted(folder.glob("*.yaml")):
            reg.register(path.stem, lambda p=path: load(p))
        return reg

    def register(self, name: str, factory: Callable[[], T]) -> None:
        if name in self._factories:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._factories[name] = factory

    def entry(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`register` for an object that is its own entry."""

        def add(obj: T) -> T:
            self.register(name, lambda: obj)
            return obj

        return add

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> T:
        try:
            factory = self._factories[name]
        except KeyError:
            hint = did_you_mean(name, self.names())
            listing = f" (`{self.list_command}` lists them)" if self.list_command else ""
            raise UnknownIdError(f"unknown {self.kind} {name!r}: {hint}{listing}") from None
        return factory()
