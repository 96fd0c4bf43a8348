"""kvhub Python package. `kvhub.keys` is a pure-Python implementation of DESIGN §2."""
