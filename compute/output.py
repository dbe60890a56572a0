"""Where a command's snapshot goes, and how it gets there without losing anybody's data.

Torch-free. Every command that writes a snapshot at `--out` (compute, merge, synth) works
in a hidden folder beside it, `.<name>.work/`, which it locks while it runs:

    LOCK        flock-ed by the live run; the lock dies with the process (kill -9 too)
    snapshot/   the snapshot being written; renamed to --out when complete
    replaced/   the snapshot --overwrite replaces, from its rename until the new one is in place

Rules (`check_target` at the start, `OutputSlot.place` at the end):
- `--out` may name nothing yet, an empty folder, or, with --overwrite, a snapshot (a folder
  with a manifest). Anything else stops the command before any work; nothing is deleted.
- Placing re-checks `--out`: a folder that appeared, or was swapped, while the command
  worked is never replaced; the finished snapshot is kept beside it under a visible name.
- Files are fsynced before their renames, and folders after them. A crash between the two
  renames of a placement leaves the old snapshot in `replaced/` and the new one in
  `snapshot/`; the next command on that `--out` finishes the placement (`recover`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from compute import schema
from compute.config import InputError

WORK_SUFFIX = ".work"


# --- durable files ------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (folders: after a rename inside them)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, fill) -> None:
    """Write `path` through `fill(tmp_path)`, fsync it, and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        fill(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(data: dict, path: Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def fsync_tree(root: Path) -> None:
    """Every file and folder below `root`, then `root` itself."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


# --- the destination -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """`--out` as it was checked at the start: its path and what stood there."""

    path: Path
    found: tuple | None  # identity() of what stood there at the start; None: nothing


def identity(path: Path) -> tuple | None:
    """What stands at `path`: its (device, inode) and, for a snapshot, its manifest; for
    another folder, its entries. Equal identities mean nobody changed it in between."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if is_snapshot_folder(path):
        content = (path / schema.MANIFEST).read_bytes()
    elif path.is_dir():
        content = tuple(sorted(p.name for p in path.iterdir()))
    else:
        content = None
    return info.st_dev, info.st_ino, content


def is_snapshot_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / schema.MANIFEST).is_file()


def check_target(out: str | Path, overwrite: bool, flag: str = "--out") -> Target:
    """`--out` checked before any work: InputError (one line) if the command may not write there."""
    text = str(out)
    path = Path(out).expanduser()
    absolute = Path(os.path.abspath(path))
    if text.strip() in ("", ".", "..") or absolute in (Path.cwd(), *Path.cwd().parents):
        raise InputError(f"{flag} {text!r} is the current folder or one above it; name a new folder for the snapshot")
    if path.is_symlink():
        raise InputError(f"{flag} {text} is a symbolic link; name the folder itself")
    parent = absolute.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(f"{flag} {text}: {ancestor} is a file, not a folder; choose another {flag}")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise InputError(f"{flag} {text}: {ancestor} is not writable; choose another {flag}")
            break
    inside = enclosing_snapshot(absolute.parent)
    if inside is not None:  # its work folder, and then the snapshot, would land inside that snapshot
        raise InputError(
            f"{flag} {text} lies inside the snapshot {inside}, which prunescope never writes into; choose a folder "
            "outside it"
        )
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{flag} {text} is a file, not a folder; choose another {flag}")
        if is_snapshot_folder(path):
            if not overwrite:
                raise InputError(
                    f"{text} already holds a snapshot; pass --overwrite to replace it or choose another {flag}"
                )
        elif any(path.iterdir()):
            raise InputError(
                f"{text} is a folder that holds other files, not a snapshot; prunescope replaces only a snapshot "
                f"or an empty folder, so choose another {flag}"
            )
    return Target(absolute, identity(absolute))


def enclosing_snapshot(path: Path) -> Path | None:
    """The snapshot folder that is `path` or holds it, if any."""
    for folder in (path, *path.parents):
        if is_snapshot_folder(folder):
            return folder
    return None


def check_apart(out: str | Path, inputs: list[tuple[str, str | Path | None]]) -> None:
    """A command never writes or deletes inside its own inputs: InputError (one line) when `out` is,
    contains or lies inside an input (`inputs`: (flag, path) pairs; an absent one's path is None).
    Paths are compared with their links resolved, so a link to an input is the input."""
    destination = Path(os.path.realpath(Path(out).expanduser()))
    for flag, given in inputs:
        if not given or not Path(given).expanduser().exists():
            continue
        source = Path(os.path.realpath(Path(given).expanduser()))
        if destination == source or source in destination.parents or destination in source.parents:
            how = "is" if destination == source else "lies inside" if source in destination.parents else "holds"
            raise InputError(
                f"--out {out} {how} {flag} {given}, an input of this command; write the snapshot to a folder apart "
                "from every input"
            )


# --- the work folder ---------------------------------------------------------------------


class OutputSlot:
    """The locked work folder beside a destination, and the placement of a finished snapshot.

    `open` locks it, finishes a placement a crash interrupted, and checks the destination
    again if that placement changed it.
    """

    #: what a work folder of this kind holds; anything else there is another command's
    ENTRIES = ("LOCK", "snapshot", "replaced")

    def __init__(self, target: Target):
        self.target = target
        self.root = target.path.parent / f".{target.path.name}{WORK_SUFFIX}"
        self.staging = self.root / "snapshot"
        self.replaced = self.root / "replaced"
        self._lock_fd: int | None = None

    # -- lifetime

    def acquire(self) -> None:
        """Create (or reuse) the work folder and lock it; InputError if another run holds it."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        fd = os.open(self.root / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(
                f"another prunescope command is writing to {self.target.path} (it holds {self.root}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def open(self, overwrite: bool) -> str | None:
        self.acquire()
        try:
            entries = [p.name for p in self.root.iterdir() if not p.name.startswith(".")]  # .x.tmp-*: ours
            foreign = sorted(name for name in entries if name not in self.ENTRIES)
            if foreign:
                raise InputError(
                    f"{self.root} holds an interrupted prunescope compute run for {self.target.path} "
                    f"({', '.join(foreign[:3])}); finish it with its command, or remove it with: rm -r '{self.root}'"
                )
            recovered = self.recover()
            if recovered:
                self.target = check_target(self.target.path, overwrite)
        except BaseException:
            self.release()
            if {p.name for p in self.root.iterdir()} <= {"LOCK"}:  # nothing of anybody's to keep
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        return recovered

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """Delete the work folder (everything in it was written by prunescope)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.release()

    def fresh_staging(self) -> Path:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    # -- placement

    def recover(self) -> str | None:
        """Finish a placement a crash interrupted. Returns a line saying what it did, or None."""
        path = self.target.path
        if is_snapshot_folder(self.staging) and (self.replaced.exists() or not path.exists()):
            if path.exists():  # the old snapshot was moved away and something else appeared: keep both
                return None
            os.replace(self.staging, path)
            fsync_path(path.parent)
            shutil.rmtree(self.replaced, ignore_errors=True)
            return f"finished placing the snapshot an interrupted command had completed at {path}"
        if self.replaced.exists() and is_snapshot_folder(path):
            shutil.rmtree(self.replaced, ignore_errors=True)
        return None

    def restore(self) -> None:
        """After an error inside `place`: put the replaced snapshot back where it was."""
        if self.replaced.exists() and not self.target.path.exists():
            os.replace(self.replaced, self.target.path)
            fsync_path(self.target.path.parent)

    def place(self) -> Path:
        """Move the complete snapshot in `staging` to the destination, never replacing a
        folder other than the one checked at the start."""
        path = self.target.path
        fsync_tree(self.staging)
        if identity(path) != self.target.found:
            kept = path.with_name(f"{path.name}.finished-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.staging, kept)
            fsync_path(kept.parent)
            self.remove()  # the snapshot is whole at `kept`: nothing in the work folder is left to resume
            raise InputError(
                f"{path} changed while this command worked (another program wrote there); it was left alone "
                f"and the finished snapshot is at {kept} (its work folder {self.root.name} is removed)"
            )
        if path.exists():
            shutil.rmtree(self.replaced, ignore_errors=True)
            os.replace(path, self.replaced)
            fsync_path(path.parent)
        os.replace(self.staging, path)
        fsync_path(path.parent)
        return path


def stale_work_folders(parent: Path) -> list[Path]:
    """Work folders in `parent` that no live command holds: left by a killed run."""
    stale = []
    for folder in sorted(Path(parent).glob(f".*{WORK_SUFFIX}")):
        lock = folder / "LOCK"
        if not lock.is_file():
            continue
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            stale.append(folder)
        except BlockingIOError:
            pass  # a live command works there
        finally:
            os.close(fd)
    return stale


def finish_interrupted_placement(out: str | Path) -> None:
    """Before a command reads what is at `out` (growing a snapshot in place), finish a
    placement that a crash interrupted there."""
    slot = OutputSlot(Target(Path(os.path.abspath(Path(out).expanduser())), None))
    if slot.root.is_dir():
        slot.acquire()
        try:
            slot.recover()
        finally:
            slot.release()
