"""kvhub Python package.

`kvhub.keys` is a pure-Python implementation of DESIGN §2 (keys only).
`kvhub.Client`, `kvhub.ModelSpec`, `kvhub.block_keys` and `kvhub.Error` come from
the compiled module `kvhub._native` (python/kvhub_native.cc; docs/client.md,
"Python"), built into build/python/kvhub by `make build`.
"""

try:
    from kvhub._native import (Client, Error, FetchResult, LookupResult, ModelSpec, PutResult,  # noqa: F401
                               block_keys, decode, encode, encoded_size, inspect)
except ImportError as e:  # the pure-Python part (keys) still works from the source tree
    _native_error = e

    _NATIVE = {"Client", "Error", "FetchResult", "LookupResult", "ModelSpec", "PutResult", "block_keys", "decode",
               "encode", "encoded_size", "inspect"}

    def __getattr__(name):
        if name not in _NATIVE:  # e.g. the submodule `keys`: imported normally
            raise AttributeError(name)
        raise ImportError(
            f"kvhub.{name} needs the compiled module kvhub._native (make build; PYTHONPATH=build/python): "
            f"{_native_error}")
