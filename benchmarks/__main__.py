"""`python -m benchmarks`: run every benchmark in turn (each writes its report to benchmarks/results/)."""

import runpy
import sys

BENCHMARKS = (
    "lr_find_quality",
    "lr_find_speed",
    "probe_overhead",
    "search_mnist1d",
    "callback_overhead",
    "thread_choice",
    "thread_speed",
)

for name in BENCHMARKS:
    print(f"\n=== benchmarks.{name}", flush=True)
    sys.argv = [f"benchmarks.{name}"]
    runpy.run_module(f"benchmarks.{name}", run_name="__main__")
