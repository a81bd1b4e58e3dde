#!/usr/bin/env python3
"""Builds a tree of N small files in N/1000 directories, deterministically (bench/many-files).

Every fourth file holds 1..4096 bytes, the others are empty: the benchmark is about the cost per entry, and
on tmpfs every non-empty file pins a 4 KiB page (2M files with data would need 8 GiB per copy).
Modes, mtimes (with nanoseconds) and a few symlinks and hard links vary so that metadata is really copied.
"""
import os
import sys

root, count = sys.argv[1], int(sys.argv[2])
per_dir = 1000
os.makedirs(root, exist_ok=True)
payload = bytes(range(256)) * 16
for d in range((count + per_dir - 1) // per_dir):
    dpath = os.path.join(root, f"d{d:05d}")
    os.mkdir(dpath)
    dfd = os.open(dpath, os.O_RDONLY | os.O_DIRECTORY)
    for i in range(min(per_dir, count - d * per_dir)):
        n = d * per_dir + i
        name = f"f{i:04d}"
        if n % 97 == 5:
            os.symlink(f"f{(i + 1) % per_dir:04d}", name, dir_fd=dfd)
            continue
        if n % 89 == 7 and i > 0:
            os.link(f"f{i - 1:04d}", name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            continue
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644 if n % 5 else 0o755, dir_fd=dfd)
        if n % 4 == 0:
            size = (n * 2654435761) % 4096 + 1
            os.write(fd, payload[:size])
        os.utime(fd, ns=(1_700_000_000_000_000_000 + n * 1_000_003, 1_700_000_000_000_000_000 + n * 1_000_003))
        os.close(fd)
    os.close(dfd)
    os.utime(dpath, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
