"""``python -m benchmarks [name ...]``: each benchmark prints its ratios against a baseline
measured in the same run. Without names, all of them (several minutes on 2 cores)."""

import importlib
import sys

from layerlens.runtime import keep_freed_memory_for_reuse

ALL = ["capture_overhead", "linear_probe", "mutual_information", "activation_maximization",
       "projection", "similarity", "full_report", "service_api", "memory_bound"]

keep_freed_memory_for_reuse()  # as the command line does
for name in sys.argv[1:] or ALL:
    if name not in ALL:
        sys.exit(f"unknown benchmark '{name}' (known: {', '.join(ALL)})")
    importlib.import_module(f"benchmarks.{name}").main()
    print(flush=True)
