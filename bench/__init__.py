"""The benchmark: `make bench` runs `python -m bench.run`."""
