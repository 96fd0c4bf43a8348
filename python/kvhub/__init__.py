"""kvhub Python package.

`kvhub.keys` is a pure-Python implementation of DESIGN §2 (keys only; it needs
python3-xxhash). `kvhub.Client`, `kvhub.ModelSpec`, `kvhub.block_keys` and
`kvhub.Error` come from the compiled module `kvhub._native` (python/kvhub_native.cc;
docs/client.md, "Python"), built into build/python/kvhub by `make build`.
"""

_NATIVE = {"Client", "Error", "FetchResult", "LookupResult", "ModelSpec", "PutResult", "block_keys", "decode",
           "encode", "encoded_size", "inspect"}
_native_error = None
_keys_error = None

try:
    from kvhub._native import (Client, Error, FetchResult, LookupResult, ModelSpec, PutResult,  # noqa: F401
                               block_keys, decode, encode, encoded_size, inspect)
except ImportError as e:  # the pure-Python part (keys) still works from the source tree
    _native_error = e

try:
    from kvhub import keys  # noqa: F401  (`import kvhub; kvhub.keys` works, as documented)
except ImportError as e:  # python3-xxhash missing: the native part still works
    _keys_error = e


def __getattr__(name):
    if name in _NATIVE and _native_error is not None:
        raise ImportError(
            f"kvhub.{name} needs the compiled module kvhub._native (make build; PYTHONPATH=build/python): "
            f"{_native_error}")
    if name == "keys" and _keys_error is not None:
        raise ImportError(f"kvhub.keys needs python3-xxhash (apt-get install python3-xxhash): {_keys_error}")
    raise AttributeError(name)
