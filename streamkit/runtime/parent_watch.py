"""A worker started by a supervisor stops when the supervisor dies, even of SIGKILL.

A child that outlived its supervisor would go on as an unsupervised member of the
group, which nobody would stop or count. On Linux the kernel sends the child
SIGTERM when its parent dies (PR_SET_PDEATHSIG, set through ctypes); everywhere,
and as a fallback, a thread watches the parent pid and sends the same SIGTERM
when the child has been handed to another parent. Either way the worker stops
as on any SIGTERM: it finishes its batches, commits and leaves the group.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("streamkit.worker")

PR_SET_PDEATHSIG = 1
WATCH_EVERY_S = 1.0


def stop_with_parent(parent_pid: int) -> None:
    """Make this process get SIGTERM once `parent_pid` is no longer its parent."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        # The parent may have died before the prctl: the first look covers that.
        while os.getppid() == parent_pid:
            time.sleep(WATCH_EVERY_S)
        log.warning("the supervisor (pid %d) is gone: stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()
