"""The benchmark's report names the file system of the server's data folder (pure)."""

from __future__ import annotations

from benchmarks.filesystem import mount_of

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
40 22 7:0 / /mnt/pg rw,noatime shared:9 - ext4 /dev/loop0 rw
41 22 7:1 / /mnt/pg\\040data rw shared:10 - xfs /dev/loop1 rw
42 22 0:5 / /dev/shm rw - tmpfs tmpfs rw
"""


def test_the_longest_mount_point_holding_the_folder_wins() -> None:
    assert mount_of("/tmp/archify-bench-x/pg", MOUNTINFO) == ("/", "ext4", "/dev/vda")
    assert mount_of("/mnt/pg/archify-bench-x/pg", MOUNTINFO) == ("/mnt/pg", "ext4", "/dev/loop0")
    assert mount_of("/mnt/pg", MOUNTINFO) == ("/mnt/pg", "ext4", "/dev/loop0")
    # a sibling whose name starts the same is another mount, and escaped spaces are read
    assert mount_of("/mnt/pgx/d", MOUNTINFO) == ("/", "ext4", "/dev/vda")
    assert mount_of("/mnt/pg data/d", MOUNTINFO) == ("/mnt/pg data", "xfs", "/dev/loop1")
