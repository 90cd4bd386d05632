"""Writing outputs so that nobody ever sees half of one, and an interrupted run loses nothing.

Every file whisperft writes (manifests, features, WAVs, transcripts, reports, checkpoints,
exports) goes through `atomic_write`: a temp file beside the target, fsync, then a rename over
it. A crash, Ctrl-C or full disk leaves the previous file as it was, never a truncated one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

# On Windows a rename onto a file that another process (a viewer, an antivirus scan) holds
# open fails with a permission error for a moment: wait and try again, this many seconds.
REPLACE_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def replace(src: str | Path, dst: str | Path) -> None:
    """os.replace, retried while the target is briefly held open by someone else (Windows)."""
    for delay in REPLACE_RETRY_DELAYS:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            time.sleep(delay)
    os.replace(src, dst)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None):
    """Context: an open file that replaces `path` when the block ends without an error.
    Mode "w+b" also reads back what was written (to fill in a file laid out first)."""
    if mode not in ("wb", "w", "w+b"):
        raise ValueError(f"mode must be 'wb', 'w+b' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file owner-only; an output is an ordinary file: the umask decides
        os.chmod(tmp, 0o666 & ~_umask())
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline="\n" if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the rename must not reach the disk before the data
        replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text (LF line ends), all or nothing."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json_atomic(path: str | Path, data) -> None:
    """Write `data` as indented UTF-8 JSON, all or nothing."""
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | Path):
    """Context: a temp folder beside `target` to write into, swapped in when the block ends."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only, like mkstemp
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            replace(target, old)
        replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
