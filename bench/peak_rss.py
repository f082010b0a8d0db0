"""Run a command and print its peak RSS in KiB: `python -m bench.peak_rss CMD [ARGS...]`.

Linux keeps a process's RSS high-water mark across fork and exec, so a command started straight
from a large benchmark process reports at least that process's size. Started from this small
one, it reports its own peak (floored at this launcher's few MiB). The command's stdout is
discarded, its stderr passed through, its exit code returned.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main() -> None:
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    print(usage.ru_maxrss, flush=True)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
