"""A PyROOT job in the AthenaMP style: initialise once, fork N workers, each
fills histograms.

Every worker writes two files:
- worker-<k>.root, registered through the framework API: the job declares
  it with mpaudit_declare_output() (found with ctypes in the process's
  global symbols, so the job runs unchanged without mpaudit);
- hist.root, opened with TFile::Open("hist.root", "RECREATE") as legacy
  code does: the same name in every worker, the clobber mpaudit is for.

Worker k fills ENTRIES + k entries, so the sum over workers is known:
N * ENTRIES + N * (N - 1) / 2.

    python job.py      (N workers: $MPAUDIT_WORKERS, else 4)
"""
import ctypes
import os
import sys

import ROOT

ENTRIES = 1000


def declare_output(path):
    """The framework API: a no-op when mpaudit is not loaded."""
    try:
        declare = ctypes.CDLL(None).mpaudit_declare_output
    except AttributeError:
        return
    declare.argtypes = [ctypes.c_char_p]
    if declare(path.encode()) != 0:
        raise OSError(ctypes.get_errno(), f"mpaudit_declare_output({path})")


def fill(name, k):
    h = ROOT.TH1F(name, name, 50, 0.0, 10.0)
    rng = ROOT.TRandom3(k + 1)
    for _ in range(ENTRIES + k):
        h.Fill(rng.Gaus(5.0, 1.5))
    return h


def worker(k):
    registered = f"worker-{k}.root"
    declare_output(registered)
    f = ROOT.TFile.Open(registered, "RECREATE")
    fill("energy", k).Write()
    f.Close()
    # The legacy pattern: every worker recreates the same file.
    f = ROOT.TFile.Open("hist.root", "RECREATE")
    fill("h", k).Write()
    fill("pt", k).Write()
    f.Close()


def main():
    n = int(os.environ.get("MPAUDIT_WORKERS", "4"))
    ROOT.gROOT.SetBatch(True)
    # Initialise before forking (dictionaries, the interpreter's JIT), as a
    # framework does, so the workers share it copy-on-write.
    ROOT.TH1F("warmup", "warmup", 1, 0, 1)
    sys.stdout.flush()
    pids = []
    for k in range(n):  # fork order is worker order
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                worker(k)
            except BaseException as e:  # a worker must never return into the loop
                print(f"worker {k}: {e!r}", file=sys.stderr)
                code = 1
            sys.stdout.flush()
            os._exit(code)
        pids.append(pid)
    failed = [k for k, pid in enumerate(pids) if os.waitpid(pid, 0)[1] != 0]
    if failed:
        raise SystemExit(f"workers failed: {failed}")
    print(f"{n} workers filled {n * ENTRIES + n * (n - 1) // 2} entries per histogram")


if __name__ == "__main__":
    main()
