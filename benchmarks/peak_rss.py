"""Peak host memory of a command: runs it as a fresh subprocess and prints its ru_maxrss (the
largest resident set of the process tree's biggest process, Linux: KiB) in MiB, with exit
status and wall time:

    python benchmarks/peak_rss.py python -m metalm_jax.evaluate --config ... --workdir ...

Used for benchmarks/RESULTS.md ("Inference loads parameters only").
"""

import resource
import subprocess
import sys
import time

if __name__ == "__main__":
    t = time.time()
    run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak_rss_mib {rss:.0f} rc {run.returncode} wall_s {time.time() - t:.0f}")
    if run.returncode:
        print(run.stderr[-3000:])
