"""Block and chunk keys of DESIGN §2, written independently of the C++ code.

Needs python3-xxhash (Debian). Every function is pure; 128-bit values are
handled as Python ints and serialized as 16 bytes, low 64 bits first, each
little-endian, printed as 32 lowercase hex digits of those bytes.
"""
import struct

import xxhash

_MASK64 = (1 << 64) - 1


def u128_bytes(v: int) -> bytes:
    return struct.pack("<QQ", v & _MASK64, v >> 64)


def u128_hex(v: int) -> str:
    return u128_bytes(v).hex()


def _xxh3_128(data: bytes) -> int:
    return xxhash.xxh3_128_intdigest(data, seed=0)


def canonical_spec_text(spec: dict) -> str:
    """spec keys: model, layers, kv_heads, head_dim, dtype, rope_base (float),
    rope_pairing, tp_rank, tp_world, block_tokens."""
    rope_bits = struct.unpack("<Q", struct.pack("<d", float(spec["rope_base"])))[0]
    return ("kvhub.spec.v1|model={model}|layers={layers}|kv_heads={kv_heads}|head_dim={head_dim}"
            "|dtype={dtype}|rope_base={rb:016x}|rope_pairing={rope_pairing}|tp_rank={tp_rank}"
            "|tp_world={tp_world}|block_tokens={block_tokens}").format(rb=rope_bits, **spec)


def fingerprint(spec: dict) -> int:
    return _xxh3_128(canonical_spec_text(spec).encode("utf-8"))


def _tokens_le(tokens) -> bytes:
    return struct.pack("<%di" % len(tokens), *tokens)


def chain_root(ns: str, fp: int) -> int:
    nsb = ns.encode("utf-8")
    return _xxh3_128(b"kvhub.v1" + struct.pack("<I", len(nsb)) + nsb + u128_bytes(fp))


def block_keys(ns: str, spec: dict, tokens) -> list:
    """Keys of every full block of `tokens` (the partial tail gets none)."""
    b = int(spec["block_tokens"])
    prev = chain_root(ns, fingerprint(spec))
    keys = []
    for i in range(len(tokens) // b):
        prev = _xxh3_128(u128_bytes(prev) + _tokens_le(tokens[i * b:(i + 1) * b]))
        keys.append(prev)
    return keys


def chunk_key(ns: str, spec: dict, tokens) -> int:
    nsb = ns.encode("utf-8")
    return _xxh3_128(b"kvhub.chunk.v1" + struct.pack("<I", len(nsb)) + nsb +
                     u128_bytes(fingerprint(spec)) + _tokens_le(tokens))
