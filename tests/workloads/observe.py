#!/usr/bin/env python3
"""A workload for the observe tests: every way of naming a file the issue lists, plus a TCP connect
and a UDP sendto without connect. Run it under `stance launch`; the test then checks that the graph
holds exactly the real absolute paths.

usage: observe.py DIR TCP_PORT UDP_PORT
"""
import ctypes
import os
import socket
import struct
import subprocess
import sys

base, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.path.join(base, "data")


def read(path, **kw):
    fd = os.open(path, os.O_RDONLY, **kw)
    os.read(fd, 16)
    os.close(fd)


# 1. absolute path
read(os.path.join(data, "a.txt"))
# 2. relative path after chdir
os.chdir(data)
read("b.txt")
os.chdir("/")
# 3. through a symlink
read(os.path.join(base, "link-c"))
# 4. openat2 relative to a directory fd (RESOLVE_NO_SYMLINKS is irrelevant here: plain flags)
libc = ctypes.CDLL(None, use_errno=True)
dfd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
how = struct.pack("QQQ", os.O_RDONLY, 0, 0)
buf = ctypes.create_string_buffer(how)
fd = libc.syscall(437, dfd, b"d.txt", buf, len(how))
if fd < 0:
    sys.exit(f"openat2 failed: errno {ctypes.get_errno()}")
os.close(fd)
# 5. through /proc/self/fd/N
read(f"/proc/self/fd/{dfd}/e.txt")
os.close(dfd)
# 6. write with create and truncate
fd = os.open(os.path.join(data, "out.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
os.write(fd, b"x")
os.close(fd)
# 7. an exec of a real binary
subprocess.run(["/bin/cat", os.path.join(data, "a.txt")], check=True, stdout=subprocess.DEVNULL)
# 8. TCP connect to loopback
s = socket.create_connection(("127.0.0.1", tcp_port))
s.close()
# 9. UDP sendto without connect
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"ping", ("127.0.0.1", udp_port))
u.close()
print("workload done")
