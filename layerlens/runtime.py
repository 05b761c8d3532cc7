"""Process-wide settings for a process whose main job is capturing activations.

Called by the command line (and, later, worker processes), never on import:
a library must not change its host process behind its back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024**2  # the largest value glibc accepts on 64-bit
_TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory_for_reuse() -> bool:
    """Stop glibc from handing large freed blocks straight back to the OS.

    Capture keeps every layer of a batch alive at once; with glibc's default
    settings those multi-megabyte tensors are mmap'ed and unmapped on every
    batch, so each batch page-faults all of its memory afresh. Keeping the
    blocks in the heap makes capturing a ResNet-20's 64 layers cost about 1.05x
    a plain TorchScript forward pass instead of about 1.3x (``make bench``).
    Returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
