"""A Python multiprocessing job (fork start method), AthenaMP style: set up
once, fork N workers, deal the events round-robin.

Each worker writes a declared per-worker output, counts-<k>.txt, and, like
much legacy code, appends to one shared file, summary.txt, with a plain
open(): the rogue write mpaudit reports.

    python3 job.py [--events N]     (N workers: $MPAUDIT_WORKERS, else 2)
"""
import argparse
import multiprocessing as mp
import os


def worker(k, n, events, weights):
    counts = {}
    for e in range(k, events, n):
        key = e % len(weights)
        counts[key] = counts.get(key, 0) + weights[key]
    # Declared output: one file per worker ([audit] outputs = ["counts-*.txt"]).
    with open(f"counts-{k}.txt", "w") as f:
        for key in sorted(counts):
            f.write(f"{key} {counts[key]}\n")
    # Rogue: every worker appends to the same file in the job directory.
    with open("summary.txt", "a") as f:
        f.write(f"worker {k}: {sum(counts.values())} over {len(range(k, events, n))} events\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100)
    args = p.parse_args()
    n = int(os.environ.get("MPAUDIT_WORKERS", "2"))
    weights = [i * i for i in range(10)]  # "initialisation", shared after the fork
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=worker, args=(k, n, args.events, weights)) for k in range(n)]
    for proc in procs:  # fork order is worker order
        proc.start()
    for proc in procs:
        proc.join()
    failed = [k for k, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise SystemExit(f"workers failed: {failed}")


if __name__ == "__main__":
    main()
