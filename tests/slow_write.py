"""``python tests/slow_write.py NAME ARGS...`` runs ``asr ARGS...`` with the atomic write of the
file called NAME held open for 30 s between its data reaching the disk and the rename, so a test
can aim a SIGKILL at the middle of a checkpoint write."""

import os
import sys
import time

from asr.cli import main

if __name__ == "__main__":
    name, argv = sys.argv[1], sys.argv[2:]
    replace = os.replace

    def slow_replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            time.sleep(30)
        return replace(src, dst, *args, **kwargs)

    os.replace = slow_replace
    sys.exit(main(argv))
