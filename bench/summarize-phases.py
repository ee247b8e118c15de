#!/usr/bin/env python3
"""Medians of kiln_bench_phases output (milliseconds since t0): one line per mode, each step's
median in microseconds.

    bench/summarize-phases.py PHASES_OUTPUT
"""
import collections
import statistics
import sys

steps = collections.defaultdict(lambda: collections.defaultdict(list))
with open(sys.argv[1]) as lines:
    for line in lines:
        words = line.split()
        for word in words[1:]:
            key, _, value = word.partition("=")
            try:
                milliseconds = float(value)
            except ValueError:
                continue  # path=aot-exact and the like
            steps[words[0]][key].append(milliseconds)
for mode in sorted(steps):
    print(mode, " ".join(f"{key}={statistics.median(values) * 1e3:.0f}us" for key, values in steps[mode].items()))
