"""The floor under a tracked run's write: bare sqlite3 (no SQLAlchemy, no zserve) inserting what
``metadata`` records for the weather pipeline (one run row, two step rows) into the store's own
schema, in group commits of ``--batch`` runs, WAL and synchronous=NORMAL as the store sets them.
Prints microseconds per run, split into the inserts and the commit.

    .venv/bin/python benchmarks/sqlite_floor.py [--batch 6] [--batches 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from zserve.records import new_id
from zserve.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=6, help="runs per commit (default 6)")
    parser.add_argument("--batches", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "zserve.db"
        store = Store(f"sqlite:///{path}")  # creates and migrates the schema
        conn = store.engine.raw_connection()  # the store's pragmas: WAL, synchronous=NORMAL
        cursor = conn.cursor()
        insert_seconds = commit_seconds = 0.0
        for _ in range(args.batches):
            runs, steps = [], []
            for _ in range(args.batch):
                run_id, now = new_id(), time.time()
                runs.append((run_id, new_id(), "0b6a7c9e-1b2c-4d5e-8f90-123456789abc",
                             "weather", "metadata", "completed", now, now, 1.0))  # fmt: skip
                steps += [(run_id, p, "step", "completed", now, 0.1, 42) for p in range(2)]
            start = time.perf_counter()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(
                "INSERT INTO runs (id, job_id, deployment_id, pipeline, capture, status, "
                "started_at, finished_at, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                runs,
            )
            cursor.executemany(
                "INSERT INTO steps (run_id, position, name, status, started_at, duration_ms, "
                "output_size) VALUES (?, ?, ?, ?, ?, ?, ?)",
                steps,
            )
            middle = time.perf_counter()
            cursor.execute("COMMIT")
            insert_seconds += middle - start
            commit_seconds += time.perf_counter() - middle
        conn.close()
        store.close()
    runs_written = args.batch * args.batches
    print(
        f"batch {args.batch}: {1e6 * (insert_seconds + commit_seconds) / runs_written:.1f} us "
        f"per run (inserts {1e6 * insert_seconds / runs_written:.1f}, "
        f"commit {1e6 * commit_seconds / runs_written:.1f})"
    )


if __name__ == "__main__":
    main()
