"""Files read once and read again when they change: the keys file, certificates and keys.

A :class:`Watched` set of paths remembers each file's stamp (modification time, size, inode;
an editor that writes a new file and renames it over the old one changes the inode) and says
when any differs; :func:`every` calls a refresh on a timer until cancelled. The readers decide
what a change means (a new keyring, a new TLS context) and keep what they had when the new
files do not load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

Stamp = tuple[int, int, int] | None


def stamp(path: Path) -> Stamp:
    """The file's modification time, size and inode; None when it cannot be read."""
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


class Watched:
    """Some files, and the stamps they had when last seen."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._seen = self._now()

    def _now(self) -> tuple[Stamp, ...]:
        return tuple(stamp(path) for path in self.paths)

    def changed(self) -> bool:
        """True when a file differs from when it was last seen (and it is seen now)."""
        now = self._now()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def seen(self) -> None:
        """Take the files as they are now as seen (after reading them on another cue)."""
        self._seen = self._now()


async def every(interval: float, refresh: Callable[[], object]) -> None:
    """Call ``refresh`` every ``interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        refresh()
