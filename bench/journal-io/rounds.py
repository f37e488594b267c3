#!/usr/bin/env python3
"""How a disk takes the journal I/O of N deployments that each append 6 records a second.

    python3 bench/journal-io/rounds.py MODE [N=10000] [SECONDS=90]

Runs the group-commit loop of `host/src/state/group_commit.rs` without the engine: rounds
take every record due, write it, make the round durable, and the lateness of a record is
from when it was due to the end of its round (p50 / p99 / max). Files go under
$JOURNAL_IO_DIR (default /var/tmp/dax-journal-io, deleted after the run). Run at least 90 s:
the kernel starts writing back dirty pages 30 s after they were dirtied
(vm.dirty_expire_centisecs), and that is where the designs differ.

MODE (what a round does):
  syncfs           write each record to its deployment's journal, then syncfs (today's design)
  beside           write to the journals (page cache only) and append the round to one log,
                   fdatasync(log)
  beside-prealloc  the same, journals preallocated (fallocate KEEP_SIZE, 64 KiB)
  beside-paced     `beside`, and a thread starts writeback of each journal once every
                   PACE_S seconds (default 10; sync_file_range), spread evenly
  beside-prealloc-paced  both
  beside-zeroed    journals written full of zeros at creation, records overwrite them
  log-only         append the round to one log, fdatasync(log); journals untouched (a
                   deployment's journal would be written when it ends)
"""
import ctypes
import os
import resource
import shutil
import sys
import threading
import time

MODES = ("syncfs", "beside", "beside-prealloc", "beside-paced", "beside-prealloc-paced",
         "beside-zeroed", "log-only")
if len(sys.argv) < 2 or sys.argv[1] not in MODES:
    sys.exit(__doc__)
MODE = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
SECS = int(sys.argv[3]) if len(sys.argv) > 3 else 90
PER_SEC = 6
PREALLOC = 64 * 1024
# About the size of an engine record.
LINE = (b'{"seq":0,"at":"2026-12-01T11:00:00Z","event":{"kind":"outcome","step":"set-traffic",'
        b'"weight":10,"ok":true,"detail":"' + b"x" * 120 + b'"}}\n')
FALLOC_FL_KEEP_SIZE = 1
SYNC_FILE_RANGE_WRITE = 2

root = os.environ.get("JOURNAL_IO_DIR", "/var/tmp/dax-journal-io")
shutil.rmtree(root, ignore_errors=True)
os.makedirs(root)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, N + 100), hard))
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_uint]

journals, offsets = [], [0] * N
for i in range(N):
    os.mkdir(f"{root}/d{i}")
    zeroed = MODE == "beside-zeroed"
    flags = os.O_WRONLY | os.O_CREAT | (0 if zeroed else os.O_APPEND)
    fd = os.open(f"{root}/d{i}/journal.jsonl", flags, 0o644)
    if "prealloc" in MODE and libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PREALLOC) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")
    if zeroed:
        os.pwrite(fd, bytes(PREALLOC), 0)
    journals.append(fd)
log = os.open(f"{root}/host.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
libc.fallocate(log, FALLOC_FL_KEEP_SIZE, 0, 256 << 20)
os.sync()  # set-up's own writes are not the run's

start = time.monotonic()
end = start + SECS
if MODE.endswith("-paced"):
    period = float(os.environ.get("PACE_S", "10"))

    def pace():
        i = 0
        while time.monotonic() < end:
            libc.sync_file_range(journals[i % N], 0, 0, SYNC_FILE_RANGE_WRITE)
            i += 1
            wait = start + i * period / N - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    threading.Thread(target=pace, daemon=True).start()

interval = 1.0 / (N * PER_SEC)
written, late, rounds, sizes = 0, [], [], []
while time.monotonic() < end:
    due = int((time.monotonic() - start) / interval)
    if due == written:
        time.sleep(0.0005)
        continue
    began = time.monotonic()
    for k in range(written, due):
        j = k % N
        if MODE == "beside-zeroed":
            os.pwrite(journals[j], LINE, offsets[j] % (PREALLOC - len(LINE)))
            offsets[j] += len(LINE)
        elif MODE != "log-only":
            os.write(journals[j], LINE)
    if MODE == "syncfs":
        libc.syncfs(log)
    else:
        os.write(log, LINE * (due - written))
        os.fdatasync(log)
    done = time.monotonic()
    rounds.append(done - began)
    sizes.append(due - written)
    late.extend(done - (start + k * interval) for k in range(written, due, 50))
    written = due

late.sort()
rounds.sort()


def ms(values, q):
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


print(f"{MODE:<22} N={N} {SECS}s: lateness p50 {ms(late, .5):.1f} / p99 {ms(late, .99):.1f} / "
      f"max {late[-1] * 1000:.1f} ms; {len(rounds)} rounds of {sum(sizes) / len(sizes):.0f} "
      f"records, round p50 {ms(rounds, .5):.2f} ms, p99 {ms(rounds, .99):.2f} ms")
for fd in journals:
    os.close(fd)
shutil.rmtree(root, ignore_errors=True)
