#!/usr/bin/env python3
"""Attribute `perf script` samples of a `charter serve` process to the stages of a job.

Reads `perf script` output (recorded with `--call-graph dwarf`) on stdin. Each sample's
stack is walked from the leaf towards the root; the first frame that names a stage decides
(so SQLite work inside a claim counts as the claim, reqwest inside the action as the
action). A SQLite thread's sample that names no command is the group commit. Prints each
stage's share of the samples, and, with --cpu-ms-per-job X (from `charter bench open`),
the stage's CPU per job in ms.

    perf script -i perf.data | scripts/bench-open/stages.py --cpu-ms-per-job 0.21
"""
import argparse
import re
import sys
from collections import Counter

# (stage, pattern on a frame's symbol), tried in this order on each frame.
ANCHORS = [
    ("claim", re.compile(r"::claim\b|::claim<|claim::")),
    ("ingest: store insert", re.compile(r"insert_event")),
    ("run writes", re.compile(r"RunWrite|run_writes|::finish_run|::flush(_with)?\b|record_run|append_runs|write_runs")),
    ("decide: rules", re.compile(r"charter_server::decide|charter_decide::|\bcel::|cel_interpreter|charter_core::expr")),
    ("templates", re.compile(r"charter_core::template")),
    ("action: HTTP call", re.compile(r"charter_connect::|\breqwest::|dispatch::Client|role::Client|hyper_util::client")),
    ("ingest: HTTP, parse, answer", re.compile(r"charter_server::ingest|dispatch::Server|role::Server|charter_server::conn|hyper_util::server|axum::")),
    ("worker: pipeline bookkeeping", re.compile(r"charter_server::worker|charter_server::pipeline")),
    ("/metrics", re.compile(r"charter_server::metrics")),
]
SQLITE_THREAD = "charter-sqlite-"


def samples(lines):
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0] if line.split() else "?"
            frames = []
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
    if comm is not None:
        yield comm, frames


def stage_of(comm, frames):
    for frame in frames:
        for stage, pattern in ANCHORS:
            if pattern.search(frame):
                return stage
    if comm.startswith(SQLITE_THREAD):
        return "store: group commit (writer thread)"
    if any("[kernel" in f for f in frames[:1]) and len(frames) <= 2:
        return "kernel, no user stack"
    return "other (runtime, timers, unresolved)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-ms-per-job", type=float, default=None)
    args = ap.parse_args()
    counts = Counter()
    threads = Counter()
    for comm, frames in samples(sys.stdin):
        counts[stage_of(comm, frames)] += 1
        threads[comm] += 1
    total = sum(counts.values())
    if total == 0:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples; by thread: " + ", ".join(f"{k} {100*v/total:.0f}%" for k, v in threads.most_common()))
    print(f"{'stage':<40} {'share':>7} {'ms/job':>8}")
    for stage, n in counts.most_common():
        share = n / total
        ms = f"{share * args.cpu_ms_per_job:.3f}" if args.cpu_ms_per_job else "-"
        print(f"{stage:<40} {100*share:>6.1f}% {ms:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
