"""A bounded, thread-safe LRU of compiled templates, shared by the server's and the SDK's rendering.

Each side passes its own compile function and key: the server keys by the text's SHA-256 (texts
arrive from requests and drafts), the SDK by the text itself (a bundle's strings are the same
objects on every render and Python caches their hash, so a hit is a dictionary lookup).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class CompileCacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int


def _same(source: str) -> Hashable:
    return source


class CompileCache(Generic[T]):  # noqa: UP046 (the SDK runs on Python 3.11: no PEP 695)
    def __init__(
        self,
        maxsize: int,
        compile: Callable[[str], T],
        *,
        key: Callable[[str], Hashable] = _same,
    ) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._compile, self._key = compile, key
        self._entries: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str) -> T:
        key = self._key(source)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
            self.misses += 1
        # Compiled outside the lock: two threads meeting the same new text both compile it and
        # the second store wins. Equal text compiles to an equal template, and a lock held over a
        # compile would make every render wait for every other new template.
        entry = self._compile(source)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return entry

    def info(self) -> CompileCacheInfo:
        with self._lock:
            return CompileCacheInfo(self.hits, self.misses, len(self._entries), self.maxsize)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0
