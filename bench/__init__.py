"""The benchmark: `make bench` (see bench/run.py). Not part of the product: nothing in langrun imports it."""
