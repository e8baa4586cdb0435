"""Which file system holds the server's data folder, for the report: creating and
deleting relation files is a good part of bootstrap and create-tenant, and on ext4
without a journal it depends on what was deleted in the last minutes
(docs/performance.md, "Creating relation files")."""

from __future__ import annotations

import os
import re
from pathlib import Path


def mount_of(path: str, mountinfo: str) -> tuple[str, str, str] | None:
    """(mount point, file system type, source) of the mount holding absolute `path`,
    from the text of /proc/self/mountinfo (the longest mount point that contains it)."""
    best: tuple[str, str, str] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        # the kernel writes a space in a mount point as \040 (octal)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        fs_type, source = fields[fields.index("-") + 1:][:2]
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, fs_type, source)
    return best


def describe(data_dir: str) -> str:
    """E.g. "ext4 with a journal on /dev/loop0"; "unknown" for a folder this machine
    does not have (a server elsewhere)."""
    path = Path(data_dir)
    if not path.is_absolute() or not os.path.exists(path):
        return "unknown (not on this machine)"
    try:
        mount = mount_of(str(path.resolve()), Path("/proc/self/mountinfo").read_text())
    except OSError:
        mount = None
    if mount is None:
        return "unknown"
    _, fs_type, source = mount
    if fs_type == "ext4":
        # an ext4 journal shows as /proc/fs/jbd2/<device>-8
        device = Path(source).name
        journal = any(Path("/proc/fs/jbd2").glob(f"{device}-*"))
        fs_type = f"ext4 {'with' if journal else 'without'} a journal"
    return f"{fs_type} on {source}"
