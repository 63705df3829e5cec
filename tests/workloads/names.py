#!/usr/bin/env python3
"""A workload for the observe tests: every change to a name that enforcement decides as a write
(rename, link, unlink, truncate by path, mkfifo), by relative paths after chdir and relative to a
directory fd, plus an rmdir (not one of them) and an unlink that fails. Run it under `stance
launch`; the test then checks each name's edge.

usage: names.py DIR
"""
import ctypes
import errno
import os
import sys

base = sys.argv[1]
os.chdir(base)
# A save by rename: write a temporary name, rename it over the file.
with open("tmp.1", "w") as f:
    f.write("x")
os.rename("tmp.1", "dump.rdb")
# A hard link, removed again through a directory fd (unlinkat).
os.link("dump.rdb", "hard")
dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
os.unlink("hard", dir_fd=dfd)
# rmdir through unlinkat(AT_REMOVEDIR): not a name change enforcement decides.
os.rmdir("sub", dir_fd=dfd)
# truncate(2) by path, and a FIFO.
os.truncate(os.path.join(base, "trunc.txt"), 0)
os.mkfifo("fifo")
# renameat2(RENAME_EXCHANGE): both names are replaced.
libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
if libc.syscall(316, dfd, b"x1", dfd, b"x2", RENAME_EXCHANGE) != 0:
    sys.exit(f"renameat2 failed: errno {ctypes.get_errno()}")
os.close(dfd)
# An unlink that fails.
try:
    os.unlink("gone")
    sys.exit("unlink of a missing name succeeded")
except FileNotFoundError:
    pass
print("names done")
