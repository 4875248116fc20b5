"""What CPython's Pool does when a worker dies mid-task (docs/reliability.md).

Run: python3 bench/python/pool_worker_killed.py [timeout_seconds]
Prints one line per case: how long the caller waited and what it got.
"""
import multiprocessing as mp
import os
import signal
import sys
import time


def die_on(x):
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def abort_on(x):
    if x == 7:
        os.abort()
    return x * x


def case(name, fn, timeout):
    with mp.get_context("fork").Pool(2) as pool:
        start = time.monotonic()
        r = pool.map_async(fn, range(20), chunksize=1)
        try:
            value = r.get(timeout)
            outcome = f"returned {len(value)} results"
        except mp.TimeoutError:
            outcome = f"still waiting after {timeout} s (TimeoutError from get(timeout))"
        except Exception as e:  # noqa: BLE001
            outcome = f"raised {type(e).__name__}: {e}"
        later = pool.apply_async(die_on, (1,))
        try:
            later.get(timeout)
            after = "a later task still runs"
        except mp.TimeoutError:
            after = "a later task hangs too"
        print(f"{name}: map {outcome} in {time.monotonic() - start:.1f} s; {after}")


if __name__ == "__main__":
    t = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    print(sys.version.split()[0])
    case("SIGKILL mid-task", die_on, t)
    case("os.abort mid-task", abort_on, t)
