"""An invocation's /tmp for the local function host: its own directory, and Lambda's size limit.

Each concurrent invocation of a function gets a directory (`Slots`, reused by later invocations
like a warm container's /tmp), which `tempfile` hands out while it runs. A write through a Python
file object (`open`, `tempfile.*`, `pathlib`) that would take the directory, plus its open
unlinked temporary files, past the function's `ephemeral_storage_mb` fails with OSError(ENOSPC),
as on Lambda. Not covered: raw descriptors (`os.write`, `os.sendfile`, so `shutil.copyfile`'s fast
path), paths built from TMPDIR or a literal "/tmp", and descriptors' paths outside Linux's /proc.
See limits.py for how these patches are installed.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TmpBudget:
    path: Path
    limit: int  # bytes
    open_files: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)

    def usage(self) -> int:
        """Bytes in use: the directory's files, and its open temporary files already unlinked."""
        used = 0
        for folder, _, files in os.walk(self.path):
            for name in files:
                try:
                    used += os.lstat(os.path.join(folder, name)).st_size
                except OSError:
                    continue
        for handle in list(self.open_files):
            try:
                stat = os.fstat(handle.fileno())
            except (OSError, ValueError):
                continue
            if stat.st_nlink == 0:
                used += stat.st_size
        return used

    def holds(self, file: Any) -> bool:
        path = _path_of(file)
        root = str(self.path)
        return path is not None and (path == root or path.startswith(root + os.sep))


Current = Callable[[], "TmpBudget | None"]


class _BudgetedFileIO(io.FileIO):
    """A raw file in an invocation's /tmp: a write past the budget fails with ENOSPC."""

    _budget: TmpBudget

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        current_size = os.fstat(self.fileno()).st_size
        end = current_size if "a" in self.mode else self.tell()
        growth = max(0, end + size - current_size)
        if growth and self._budget.usage() + growth > self._budget.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.name))
        return int(super().write(data) or 0)


def _budgeted_open(budget: TmpBudget, file: Any, mode: str = "r", buffering: int = -1,
                   encoding: str | None = None, errors: str | None = None, newline: str | None = None,
                   closefd: bool = True, opener: Any = None) -> Any:
    """`open` for a file in the budgeted directory, built like io.open builds its layers."""
    raw = _BudgetedFileIO(file, "".join(c for c in "xrwa+" if c in mode), closefd=closefd, opener=opener)
    raw._budget = budget
    budget.open_files.add(raw)
    binary = "b" in mode
    line_buffering = buffering == 1 and not binary
    if buffering == 1 or buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if not binary:
            raise ValueError("can't have unbuffered text I/O")
        return raw
    buffer: Any
    if "+" in mode:
        buffer = io.BufferedRandom(raw, buffering)
    elif any(c in mode for c in "wxa"):
        buffer = io.BufferedWriter(raw, buffering)
    else:
        buffer = io.BufferedReader(raw, buffering)
    if binary:
        return buffer
    text = io.TextIOWrapper(buffer, io.text_encoding(encoding), errors, newline, line_buffering)
    text.mode = mode  # type: ignore[misc]
    return text


def _path_of(file: Any) -> str | None:
    if isinstance(file, int):
        try:
            return os.readlink(f"/proc/self/fd/{file}")  # Linux: where a descriptor points
        except OSError:
            return None
    try:
        return os.path.realpath(os.fsdecode(file))
    except (TypeError, ValueError):
        return None


def open_with_budget(original: Callable[..., Any], current: Current) -> Callable[..., Any]:
    """`open` that budgets writes into the running invocation's /tmp (others go straight through)."""

    def budget_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        budget = current()
        if budget is None or not any(c in mode for c in "wxa+") or not budget.holds(file):
            return original(file, mode, *args, **kwargs)
        return _budgeted_open(budget, file, mode, *args, **kwargs)

    budget_open.__wrapped__ = original  # type: ignore[attr-defined]
    return budget_open


def tmp_dir(original: Callable[[], Any], current: Current, *, as_bytes: bool) -> Callable[[], Any]:
    """`tempfile.gettempdir(b)`: the running invocation's /tmp."""

    def gettempdir() -> Any:
        budget = current()
        if budget is None:
            return original()
        return os.fsencode(budget.path) if as_bytes else str(budget.path)

    gettempdir.__wrapped__ = original  # type: ignore[attr-defined]
    return gettempdir


class Slots:
    """A function's /tmp directories: one per concurrent invocation, reused like warm containers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.free: list[int] = []
        self.count = 0
        self.lock = threading.Lock()

    def acquire(self) -> Path:
        with self.lock:
            if self.free:
                number = min(self.free)
                self.free.remove(number)
            else:
                number = self.count
                self.count += 1
        path = self.root / str(number)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def release(self, path: Path, *, discard: bool) -> None:
        if discard:  # a killed invocation's container is gone, and its /tmp with it
            shutil.rmtree(path, ignore_errors=True)
        with self.lock:
            self.free.append(int(path.name))
