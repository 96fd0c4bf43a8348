"""Block and chunk keys of DESIGN §2, written independently of the C++ code.

Needs python3-xxhash (Debian). Every function is pure; 128-bit values are
handled as Python ints and serialized as 16 bytes, low 64 bits first, each
little-endian, printed as 32 lowercase hex digits of those bytes.

Inputs are checked as the C++ code checks them (common/keys.cc, model_spec.cc) and
refused with ValueError: a spec field given as text ("032"), a bool among the token
ids, or a namespace the service refuses would otherwise hash to keys no engine makes.
"""
import math
import numbers
import operator
import struct

import xxhash

_MASK64 = (1 << 64) - 1


def u128_bytes(v: int) -> bytes:
    return struct.pack("<QQ", v & _MASK64, v >> 64)


def u128_hex(v: int) -> str:
    return u128_bytes(v).hex()


def _xxh3_128(data: bytes) -> int:
    return xxhash.xxh3_128_intdigest(data, seed=0)


def _as_int(v):
    """v as an int when it is an integer (Python or numpy), else None; bools are not."""
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


def _int(spec, name, lo, hi):
    v = _as_int(spec[name])
    if v is None or not lo <= v <= hi:
        raise ValueError(f"model spec: {name}={spec[name]!r} must be an int in [{lo}, {hi}]")
    return v


# ModelSpec's defaults (common/model_spec.h) for the fields a spec may leave out.
SPEC_DEFAULTS = {"dtype": "bf16", "rope_base": 10000.0, "rope_pairing": "neox", "tp_rank": 0, "tp_world": 1,
                 "block_tokens": 256}
SPEC_REQUIRED = ("model", "layers", "kv_heads", "head_dim")


def check_spec(spec: dict) -> dict:
    """ValueError naming the first field ModelSpec::Validate would refuse (or a
    required field left out); else the spec with ModelSpec's defaults filled in and
    its integer fields as Python ints (numpy integers are accepted)."""
    missing = [f for f in SPEC_REQUIRED if f not in spec]
    if missing:
        raise ValueError(f"model spec: {', '.join(missing)} required")
    unknown = sorted(set(spec) - set(SPEC_REQUIRED) - set(SPEC_DEFAULTS))
    if unknown:
        raise ValueError(f"model spec: unknown field(s) {', '.join(unknown)}")
    spec = {**SPEC_DEFAULTS, **spec}
    model = spec["model"]
    if not isinstance(model, str) or not model or len(model.encode("utf-8")) > 256:
        raise ValueError("model spec: model must be a non-empty str of at most 256 UTF-8 bytes")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c in "|=," for c in model):
        raise ValueError("model spec: model name may not contain whitespace, control bytes, '|', '=' or ','")
    ints = {name: _int(spec, name, 1, hi) for name, hi in (("layers", 1024), ("kv_heads", 1024), ("head_dim", 1024),
                                                           ("tp_world", 1024), ("block_tokens", 65536))}
    ints["tp_rank"] = _int(spec, "tp_rank", 0, ints["tp_world"] - 1)
    rb = spec["rope_base"]
    try:
        finite = not isinstance(rb, bool) and isinstance(rb, numbers.Real) and math.isfinite(rb) and rb > 0
    except OverflowError:  # an int beyond a double's range (math.isfinite(10**309))
        finite = False
    if not finite:
        raise ValueError(f"model spec: rope_base={rb!r} must be a finite number > 0")
    if spec["dtype"] not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"model spec: dtype={spec['dtype']!r} must be bf16, fp16 or fp32")
    if spec["rope_pairing"] not in ("neox", "interleaved"):
        raise ValueError(f"model spec: rope_pairing={spec['rope_pairing']!r} must be neox or interleaved")
    return {**spec, **ints}


def check_namespace(ns: str) -> None:
    """ValueError for a namespace ValidateNamespace refuses."""
    if not isinstance(ns, str) or not ns:
        raise ValueError("namespace must be a non-empty str")
    if len(ns.encode("utf-8")) > 256:
        raise ValueError(f"namespace is {len(ns.encode('utf-8'))} bytes, limit 256")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ns):
        raise ValueError("namespace holds a control byte")


def canonical_spec_text(spec: dict) -> str:
    """spec keys: model, layers, kv_heads, head_dim, dtype, rope_base (float),
    rope_pairing, tp_rank, tp_world, block_tokens."""
    spec = check_spec(spec)
    rope_bits = struct.unpack("<Q", struct.pack("<d", float(spec["rope_base"])))[0]
    return ("kvhub.spec.v1|model={model}|layers={layers}|kv_heads={kv_heads}|head_dim={head_dim}"
            "|dtype={dtype}|rope_base={rb:016x}|rope_pairing={rope_pairing}|tp_rank={tp_rank}"
            "|tp_world={tp_world}|block_tokens={block_tokens}").format(rb=rope_bits, **spec)


def fingerprint(spec: dict) -> int:
    return _xxh3_128(canonical_spec_text(spec).encode("utf-8"))


def _tokens_le(tokens) -> bytes:
    if isinstance(tokens, (bytes, bytearray, memoryview, str)):
        # Iterating them gives bytes or characters, not token ids.
        raise ValueError(f"token ids must be a sequence of ints, not {type(tokens).__name__}")
    tokens = list(tokens)  # an iterator is walked once: keep what it gave for the checks
    ids = [_as_int(t) for t in tokens]
    for t, i in zip(tokens, ids):
        if i is None:
            raise ValueError(f"token ids must be ints, got {t!r}")
    try:
        return struct.pack("<%di" % len(ids), *ids)
    except struct.error as e:
        raise ValueError(f"token ids must fit int32: {e}") from None


def chain_root(ns: str, fp: int) -> int:
    check_namespace(ns)
    nsb = ns.encode("utf-8")
    return _xxh3_128(b"kvhub.v1" + struct.pack("<I", len(nsb)) + nsb + u128_bytes(fp))


def block_keys(ns: str, spec: dict, tokens) -> list:
    """Keys of every full block of `tokens` (the partial tail gets none)."""
    spec = check_spec(spec)  # ModelSpec's defaults first (block_tokens among them)
    b = int(spec["block_tokens"])
    packed = _tokens_le(tokens)  # every id checked, the partial tail's too, as C++ does
    prev = chain_root(ns, fingerprint(spec))
    keys = []
    for i in range(len(packed) // (4 * b)):
        prev = _xxh3_128(u128_bytes(prev) + packed[4 * i * b:4 * (i + 1) * b])
        keys.append(prev)
    return keys


def chunk_key(ns: str, spec: dict, tokens) -> int:
    check_namespace(ns)
    nsb = ns.encode("utf-8")
    return _xxh3_128(b"kvhub.chunk.v1" + struct.pack("<I", len(nsb)) + nsb +
                     u128_bytes(fingerprint(spec)) + _tokens_le(tokens))
