"""Dump a GGUF file with llama.cpp's gguf-py (PyPI `gguf`) as JSON, for tests/gguf.rs.

usage: dump_gguf.py FILE [DEQUANT_DIR]

Prints one JSON object: version, alignment, data_offset, metadata (key, value types, value) in
file order, tensors (name, type name, dims fastest-first, absolute data offset, byte count). With
DEQUANT_DIR, also writes each float tensor dequantized by gguf.quants.dequantize as raw
little-endian float32 to DEQUANT_DIR/<tensor index>.f32.

Exit status 3 when the gguf module cannot be imported (the Rust test turns that into a failure).
"""

import json
import os
import sys

try:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType
    from gguf.quants import dequantize
except Exception as e:  # noqa: BLE001 - any import problem is reported the same way
    print(f"cannot import the Python gguf package (pip install gguf==0.19.0): {e}", file=sys.stderr)
    sys.exit(3)


def field_value(field):
    """The value of a metadata field as plain JSON (arrays as lists)."""
    types = field.types
    if types[0] == GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == GGUFValueType.ARRAY:
            return None  # nested arrays: not used by deepseek4 files
        return list(field.contents())
    v = field.contents()
    if isinstance(v, (np.generic,)):
        v = v.item()
    return v


def main():
    path = sys.argv[1]
    out_dir = sys.argv[2] if len(sys.argv) > 2 else None
    r = GGUFReader(path)
    meta = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        meta.append({
            "key": key,
            "types": [t.name for t in field.types],
            "value": field_value(field),
        })
    tensors = []
    for i, t in enumerate(r.tensors):
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": [int(x) for x in t.shape],
            "data_offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "n_elements": int(t.n_elements),
        })
        if out_dir is not None and t.tensor_type.name not in ("I8", "I16", "I32", "I64"):
            values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
            values.astype("<f4").tofile(os.path.join(out_dir, f"{i}.f32"))
    version = int(r.fields["GGUF.version"].contents())
    try:
        from importlib.metadata import version as package_version
        gguf_py = package_version("gguf")
    except Exception:  # noqa: BLE001 - a version string is informative only
        gguf_py = "unknown"
    print(json.dumps({
        "gguf_py": gguf_py,
        "version": version,
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "tensors": tensors,
    }))


if __name__ == "__main__":
    main()
