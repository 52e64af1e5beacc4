"""Writers of one SQLite file take turns on an flock beside it (`serve --workers N` shares the file):
a write waits while another process holds the turn, and goes through once that process is gone,
even when it was SIGKILLed holding it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from conftest import vehicle
from vimark.server.registry import parse_vehicle
from vimark.server.store import Store

HOLD_THE_TURN = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_write_waits_for_another_process_holding_the_turn(tmp_path: Path) -> None:
    db = tmp_path / "vimark.db"
    store = Store(f"sqlite:///{db}")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_TURN, str(tmp_path / "vimark.db-writer.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        outcome: list[object] = []
        writer = threading.Thread(
            target=lambda: outcome.append(store.upsert_vehicles([parse_vehicle(vehicle())])), daemon=True
        )
        writer.start()
        writer.join(0.5)
        assert writer.is_alive(), "the write went ahead while another process held the writer's turn"
        assert store.snapshot()[1] == []  # reads do not wait (WAL), and nothing was written yet
        holder.kill()  # SIGKILL: the kernel releases the flock with the process
        holder.wait()
        writer.join(10)
        assert not writer.is_alive(), "the write did not go through after the holder died"
        assert outcome == [(1, 0)]
        assert [v.plate_number for v in store.snapshot()[1]] == ["闽C12345"]
    finally:
        holder.kill()
        holder.wait()
        store.close()
