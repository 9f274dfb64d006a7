"""Experiment (issue 12, 2026-11-30): the FIFO inference thread (from git) against the scheduler.

In one run, for each N, the server of ``--before`` (the last commit with the FIFO
``InferenceService``, exported from git into a temporary folder and started from there)
and the current one, one after the other (ABBA order across N), each a fresh process.

The runs and what is reported are ``bench.scheduler``'s (its docstring says them once);
the old server has no ``rtc_scheduler_busy_seconds_total``, so its busy ratio is derived
from the messages only.

Today's server alone, with the same runs and verdict: ``python -m bench.scheduler``; this
module adds the old tree and the ABBA order. It exports an old commit's ``rtc_server``,
``signaling`` and ``static`` and starts them as they were, so it may not run against a
later tree (the server's flags, ``/readyz`` or the package layout may have moved).

    python -m bench.experiments.scheduler_before_after [--before 425d0e6] [--peers 1,2,4,8,16]
        [--duration 20] [--codec h264] [--client-procs 2] [--flood 4] [--flood-peers 4]
        [--server-args "..."] [--out FILE]

A table, the verdict on issue 12's targets for each server, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, find_model, load, save_json
from bench.scheduler import add_arguments, plan, report, run_one

#: The last commit whose server ran every frame and /predict through one FIFO thread.
BEFORE_COMMIT = "425d0e6"


@contextlib.contextmanager
def tree_at(commit: str) -> Iterator[Path]:
    """The server's packages as they were at ``commit`` (``git archive``), in a temp folder."""
    data = subprocess.run(["git", "archive", "--format=tar", commit, "rtc_server", "signaling", "static"],
                          cwd=ROOT, check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory(prefix="issue-12-before-") as folder:
        with tarfile.open(fileobj=BytesIO(data)) as archive:
            archive.extractall(folder, filter="data")
        yield Path(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE_COMMIT, help="commit of the FIFO server to compare with")
    add_arguments(parser)
    args = parser.parse_args()
    load_start = load()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    model = find_model()
    runs: list[dict[str, Any]] = []
    with tree_at(args.before) as before_tree:
        for i, (n, flood) in enumerate(plan(args)):
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for variant in order:
                label = f"{variant}: {n} peer(s)" + (f" + {flood} /predict loops" if flood else "")
                print(f"  {label}, {args.duration:.0f} s ...", flush=True)
                if variant == "after":
                    runs.append(run_one("after", model, n, args.duration, args, flood,
                                        extra_args=tuple(args.server_args.split())))
                else:
                    # The default "before" is the FIFO server; another --before (a later commit,
                    # to measure a change made since) has the scheduler too.
                    runs.append(run_one("before", model, n, args.duration, args, flood, cwd=before_tree,
                                        scheduler=args.before != BEFORE_COMMIT))
    verdicts = report(runs, ("before", "after"), args.flood_peers)
    result = {"started": started, "before": args.before, "codec": args.codec, "duration_s": args.duration,
              "runs": runs, "verdict": verdicts}
    if args.out:
        save_json(args.out, {**result, "load_start": load_start, "load_end": load()})
    emit("scheduler_before_after", result, load_start)


if __name__ == "__main__":
    main()
