#!/usr/bin/env python3
"""What one small durable append costs on this disk, three ways.

    python3 bench/fsync_cost.py [DIR] [WRITES] [RUNS]

For each way, WRITES (400) O_DIRECT 4 KiB writes at consecutive offsets of a new file in
DIR (the current directory), each followed by fdatasync, timed together; prints the
median and 90th percentile per way, RUNS (2) times:

- append: every write extends the file (ext4 commits the new size and extent in its
  journal at each fdatasync);
- falloc: the file was posix_fallocate'd first (unwritten extents, converted at each
  write: still a journal commit);
- zeroed: the file was written with zeros and fsynced first (a write overwrites data in
  place: the fdatasync flushes only the data).

Replica extents append (the first way); see docs/performance.md.
"""
import mmap
import os
import sys
import time

BLOCK = 4096


def run(directory, name, prepare, writes):
    path = os.path.join(directory, f"fsync_cost.{os.getpid()}.{name}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o644)
    try:
        buf = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
        buf.write(os.urandom(BLOCK))
        prepare(fd, writes * BLOCK)
        took = []
        for i in range(writes):
            t = time.perf_counter()
            os.pwrite(fd, buf, BLOCK * i)
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    print(f"{name:7s} p50 {took[len(took) // 2] * 1e3:.3f} ms  p90 {took[int(len(took) * 0.9)] * 1e3:.3f} ms")


def nothing(fd, size):
    pass


def fallocated(fd, size):
    os.posix_fallocate(fd, 0, size)
    os.fsync(fd)


def zeroed(fd, size):
    zeros = mmap.mmap(-1, 1 << 20)
    for at in range(0, size, 1 << 20):
        os.pwrite(fd, zeros, at)
    os.fsync(fd)


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    writes = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    for _ in range(runs):
        run(directory, "append", nothing, writes)
        run(directory, "falloc", fallocated, writes)
        run(directory, "zeroed", zeroed, writes)


if __name__ == "__main__":
    main()
