#!/usr/bin/env python3
"""Merges minifw histogram files: sums the counts bin by bin.

    python3 merge_hist.py OUTPUT INPUT...

The example's stand-in for ROOT's `hadd -f OUTPUT INPUT...`. Inputs must
have the same binning; anything else is an error (exit 1), so mpaudit
reports the merge as failed and keeps the worker files.
"""
import sys


def read(path):
    bins, entries = {}, 0
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if parts[0] == "entries":
                entries = int(parts[1])
            elif len(parts) == 3:
                bins[(parts[0], parts[1])] = int(parts[2])
            else:
                raise ValueError(f"{path}:{n}: not a histogram line: {line!r}")
    return bins, entries


def main(argv):
    if len(argv) < 3:
        print("usage: merge_hist.py OUTPUT INPUT...", file=sys.stderr)
        return 2
    out, inputs = argv[1], argv[2:]
    total, entries, order = {}, 0, None
    for path in inputs:
        bins, n = read(path)
        if order is None:
            order = list(bins)
        elif set(bins) != set(order):
            print(f"merge_hist.py: {path}: binning differs from {inputs[0]}", file=sys.stderr)
            return 1
        for b, c in bins.items():
            total[b] = total.get(b, 0) + c
        entries += n
    with open(out, "w") as f:
        f.write(f"# minifw histogram: energy [GeV], merged from {len(inputs)} file(s)\n")
        for b in order or []:
            f.write(f"{b[0]} {b[1]} {total[b]}\n")
        f.write(f"entries {entries}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
