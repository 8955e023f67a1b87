"""Studies of the tool itself: benchmark (speed and memory, measured side by side), search_efficiency (which search
strategy finds a good model fastest), airbench_reference (the published airbench94 recipe, ported for the CPU: the
yardstick the harness's airbench baseline is compared with)."""
