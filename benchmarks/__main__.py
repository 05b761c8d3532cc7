"""``python -m benchmarks``: every benchmark, each printing its ratios."""

from benchmarks import capture_overhead
from layerlens.runtime import keep_freed_memory_for_reuse

keep_freed_memory_for_reuse()  # as the command line does
capture_overhead.main()
