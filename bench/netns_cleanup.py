"""Remove what the network-namespace harness (``tests/netns.py``) may have left behind.

Every simulated LAN owns a *tag* ``t`` (1..254, written as two hex digits ``tt``) and names
everything after it: the bridge ``bac<tt>``, the bridge ends of its veth pairs ``bac<tt>v<i>``,
its machines' namespaces ``ba-<tt>-<machine>``, its subnet ``10.213.<t>.0/24``. Ownership is a
lock file, ``/run/booagent-netns/bac<tt>.lock``, created before any of those objects, held with
``flock`` for the LAN's whole life and removed last:

- lock file present and locked: a live run owns the tag; nothing of it is touched.
- lock file present and unlocked: its owner died (the kernel drops the locks of a dead process,
  even one killed with SIGKILL); every process inside its namespaces is killed and every
  object named with the tag is deleted.
- no lock file: the objects are not the harness's; nothing is touched (``--unclaimed`` removes
  them too, for manual recovery when the lock directory itself was deleted).

Run it as ``python bench/netns_cleanup.py [--dry-run] [--unclaimed]`` (a Makefile target), or
import ``sweep()``. Standard library only, so it runs without the project's virtualenv.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR = Path("/run/booagent-netns")
DEFAULT_GRACE = 2.0
_KILL_WAIT = 2.0
_BRIDGE = re.compile(r"bac([0-9a-f]{2})")
_VETH = re.compile(r"bac([0-9a-f]{2})v[0-9]+")
_NETNS = re.compile(r"ba-([0-9a-f]{2})-[a-z0-9][a-z0-9-]*")
_LOCK = re.compile(r"bac([0-9a-f]{2})\.lock")
_GONE = ("Cannot find device", "No such file or directory", "Cannot open network namespace")


class IpError(RuntimeError):
    """An ``ip`` command failed; ``stderr`` is what it said."""

    def __init__(self, argv: Sequence[str], stderr: str) -> None:
        super().__init__(f"`{' '.join(argv)}` failed: {stderr.strip()}")
        self.argv = tuple(argv)
        self.stderr = stderr


class ProcessesSurvived(RuntimeError):
    """Processes still run after SIGKILL (stuck in the kernel); the message lists them."""


def ip(*args: str) -> str:
    """Run ``ip ARGS`` and return its stdout; raise ``IpError`` when it fails."""
    argv = ["ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise IpError(argv, done.stderr)
    return done.stdout


def bridge_name(tag: int) -> str:
    return f"bac{tag:02x}"


def veth_name(tag: int, index: int) -> str:
    return f"bac{tag:02x}v{index}"


def netns_name(tag: int, machine: str) -> str:
    return f"ba-{tag:02x}-{machine}"


def lock_path(tag: int) -> Path:
    return LOCK_DIR / f"{bridge_name(tag)}.lock"


def tag_of(pattern: re.Pattern[str], name: str) -> int | None:
    """The tag encoded in ``name`` when the whole name matches ``pattern``, else None."""
    match = pattern.fullmatch(name)
    return int(match.group(1), 16) if match else None


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = ip("-j", "netns", "list").strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def list_links() -> dict[str, str]:
    """Interfaces of the root namespace, name -> kind (``bridge``, ``veth``; "" when plain)."""
    out = ip("-j", "-d", "link", "show").strip()
    entries = json.loads(out) if out else []
    return {e["ifname"]: e.get("linkinfo", {}).get("info_kind", "") for e in entries}


def netns_pids(name: str) -> set[int]:
    """Processes living in namespace ``name`` (empty when it does not exist)."""
    try:
        return {int(pid) for pid in ip("netns", "pids", name).split()}
    except IpError:
        return set()


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, waiting to be reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _signal_all(pids: Iterable[int], groups: Iterable[int], sig: signal.Signals) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_empty(find: Callable[[], set[int]], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := find()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def stop_processes(
    find: Callable[[], set[int]], grace: float, groups: Sequence[int] = ()
) -> set[int]:
    """SIGTERM what ``find()`` returns (and the process ``groups``), wait up to ``grace``
    seconds, SIGKILL what is left, wait again briefly; return the pids that still live
    (normally none: only a process stuck in the kernel survives SIGKILL).

    A pid once found is waited for until it is really gone: an exiting process leaves its
    namespace (and ``ip netns pids``) a moment before it stops running."""
    seen: set[int] = set()

    def running() -> set[int]:
        seen.update(find())
        return {pid for pid in seen if is_alive(pid)}

    _signal_all(running(), groups, signal.SIGTERM)
    if not _wait_empty(running, grace):
        return set()
    _signal_all(running(), groups, signal.SIGKILL)
    return _wait_empty(running, _KILL_WAIT)


def _delete(*args: str) -> None:
    """``ip ARGS``, where an object that is already gone is not an error."""
    try:
        ip(*args)
    except IpError as exc:
        if not any(marker in exc.stderr for marker in _GONE):
            raise


@dataclass(frozen=True)
class Removed:
    """What one tag had (or, after a sweep, what was removed)."""

    tag: int
    namespaces: tuple[str, ...]
    links: tuple[str, ...]

    def __str__(self) -> str:
        names = ", ".join((*self.namespaces, *self.links)) or "no objects"
        return f"{bridge_name(self.tag)}: {names}"


def describe_tag(tag: int) -> Removed:
    """The namespaces, veths and bridge that exist now with ``tag`` in their names."""
    namespaces = tuple(n for n in list_netns() if tag_of(_NETNS, n) == tag)
    links = list_links()
    veths = [n for n, kind in links.items() if kind == "veth" and tag_of(_VETH, n) == tag]
    bridges = [n for n, kind in links.items() if kind == "bridge" and tag_of(_BRIDGE, n) == tag]
    return Removed(tag, namespaces, (*sorted(veths), *bridges))


def destroy_tag(tag: int, grace: float = DEFAULT_GRACE) -> Removed:
    """Kill every process in the tag's namespaces, then delete its veths, namespaces and
    bridge. The caller must own the tag (hold its lock).

    Veths are deleted explicitly, before their namespaces, because the kernel tears a
    namespace down asynchronously after ``ip netns del`` and its veth pair would linger. A
    namespace with a process that survived SIGKILL is kept (deleting its name would hide the
    process from every later sweep) and ``ProcessesSurvived`` is raised after the rest is gone."""
    found = describe_tag(tag)
    survivors = stop_processes(lambda: set().union(*map(netns_pids, found.namespaces)), grace)
    for link in found.links:
        _delete("link", "del", link)
    for name in found.namespaces:
        if not netns_pids(name):
            _delete("netns", "del", name)
    if survivors:
        raise ProcessesSurvived(f"{sorted(survivors)} survived SIGKILL; their namespaces kept")
    return found


class TagLock:
    """Ownership of a tag: an exclusive ``flock`` on its lock file, held until ``release``."""

    def __init__(self, tag: int, fd: int, created: bool) -> None:
        self.tag = tag
        self.created = created
        self._fd = fd

    @classmethod
    def try_acquire(cls, tag: int, *, create: bool) -> TagLock | None:
        """Lock the tag's file, creating it when ``create``; None when another live process
        holds it (or, without ``create``, when it does not exist). ``created`` tells whether
        this call made the file, i.e. whether the tag had no earlier (dead) owner."""
        LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        opened = _open_lock_file(lock_path(tag), create)
        if opened is None:
            return None
        fd, created = opened
        if not _lock_still_current(fd, lock_path(tag)):
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(tag, fd, created)

    def release(self, *, unlink: bool) -> None:
        """Give the tag up; ``unlink`` removes the lock file first (only once the tag's
        objects are gone: a lock file without a live owner marks leftovers to sweep)."""
        if unlink:
            lock_path(self.tag).unlink(missing_ok=True)
        os.close(self._fd)


def _open_lock_file(path: Path, create: bool) -> tuple[int, bool] | None:
    if create:
        with contextlib.suppress(FileExistsError):
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
    try:
        return os.open(path, os.O_RDWR), False
    except FileNotFoundError:
        return None


def _lock_still_current(fd: int, path: Path) -> bool:
    """Take the lock and check that ``path`` still names the locked file (its owner may have
    unlinked it between our open and our lock, the classic flock-and-unlink race)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return os.fstat(fd).st_ino == path.stat().st_ino
    except (BlockingIOError, FileNotFoundError):
        return False


def _claimed_tags() -> list[int]:
    if not LOCK_DIR.is_dir():
        return []
    tags = (tag_of(_LOCK, path.name) for path in LOCK_DIR.iterdir())
    return sorted(tag for tag in tags if tag is not None)


def _unclaimed_tags() -> list[int]:
    names = [*list_links(), *list_netns()]
    tags = {tag_of(p, n) for n in names for p in (_BRIDGE, _VETH, _NETNS)}
    return sorted(tag for tag in tags if tag is not None and not lock_path(tag).exists())


def sweep(
    *, dry_run: bool = False, unclaimed: bool = False, grace: float = DEFAULT_GRACE
) -> list[Removed]:
    """Remove the objects of every tag whose owner is dead and return what was removed (with
    ``dry_run``, what would be). Tags held by live runs are never touched; objects without a
    lock file only with ``unclaimed``."""
    tags = [(tag, False) for tag in _claimed_tags()]
    if unclaimed:
        tags += [(tag, True) for tag in _unclaimed_tags()]
    removed = []
    for tag, create in tags:
        lock = TagLock.try_acquire(tag, create=create)
        if lock is None:
            continue
        try:
            found = describe_tag(tag) if dry_run else destroy_tag(tag, grace)
        except BaseException:
            lock.release(unlink=False)  # still a leftover: the next sweep retries
            raise
        lock.release(unlink=not dry_run)
        removed.append(found)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list, do not remove")
    parser.add_argument(
        "--unclaimed", action="store_true", help="also remove harness-named objects without a lock"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("netns_cleanup: needs root", file=sys.stderr)
        return 2
    for found in sweep(dry_run=args.dry_run, unclaimed=args.unclaimed):
        print(("would remove " if args.dry_run else "removed ") + str(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
