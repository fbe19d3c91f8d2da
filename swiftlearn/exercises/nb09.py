"""Checks for notebook 09 (compression): the learner decompresses Core ML's weights."""

from __future__ import annotations

import numpy as np

from .core import NOT_ATTEMPTED, ExerciseError, attempt, keeps_rng, not_attempted

__all__ = ["check_09_dequantize", "check_09_unpack"]


def _same(got: np.ndarray, want: np.ndarray, rtol: float = 1e-6) -> bool:
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=1e-7))


@keeps_rng
def check_09_dequantize(dequantize) -> None:
    """Exercise 1: ``scale * (q - zero_point)`` along ``axis``, in float32."""
    label = "Exercise 1"
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, (3, 4), dtype=np.int8)
    q[0, 0], q[2, 3] = 127, -128  # values where int8 arithmetic overflows
    cases = []
    for axis, n in ((0, 3), (1, 4)):
        scale = rng.uniform(0.01, 0.1, n).astype(np.float16)  # as Core ML stores them
        zero = rng.integers(-6, 7, n).astype(np.int8)
        zero[0], zero[-1] = -3, 5  # 127 - (-3) and -128 - 5 leave the int8 range
        cases.append((axis, n, scale, zero))
    first = attempt(dequantize, q, cases[0][2], cases[0][3], 0)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for axis, n, scale, zero in cases:
        shape = [1, 1]
        shape[axis] = n
        s = scale.astype(np.float32).reshape(shape)
        z = zero.astype(np.float32).reshape(shape)
        want = s * (q.astype(np.float32) - z)
        got = attempt(dequantize, q, scale, zero, axis)
        where = f"{label}: dequantize(q, scale, zero_point, axis={axis})"
        try:
            arr = np.asarray(got)
            values = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ExerciseError(f"{where}: return an array, got {type(got).__name__}") from None
        if values.shape != want.shape:
            raise ExerciseError(f"{where} has shape {values.shape}, expected {want.shape}; "
                                f"reshape scale and zero_point to {shape} so that they run "
                                f"along axis {axis}")
        if _same(values, want):
            if arr.dtype != np.float32:
                raise ExerciseError(f"{where} has dtype {arr.dtype}; return float32, the type "
                                    "the weight is used in (cast scale to float32 first)")
            continue
        half = scale.reshape(shape) * (q.astype(np.float16) - zero.astype(np.float16)
                                       .reshape(shape))
        wrapped = s * (q - zero.reshape(shape)).astype(np.float32)  # int8 arithmetic wraps
        mistakes = [
            (s * q, "the zero point is missing: scale * (q - zero_point)"),
            (s * q - z, "subtract the zero point before scaling: scale * (q - zero_point)"),
            (wrapped, "q - zero_point overflowed int8 (127 - (-3) wraps to -126): convert to "
                      "float32 before subtracting"),
            (half, "that is float16 arithmetic (scale is stored in float16, and float16 times "
                   "anything stays float16): cast scale and zero_point to float32 first"),
        ]
        for wrong, message in mistakes:
            if _same(values, np.asarray(wrong, np.float64), 1e-7):
                raise ExerciseError(f"{where} is off: {message}")
        diff = float(np.abs(values - want).max())
        raise ExerciseError(f"{where} is off by up to {diff:.3g}; it should be "
                            "float32(scale) * (float32(q) - float32(zero_point)), the vectors "
                            f"reshaped to {shape}")
    print(f"{label}: correct")
    return None


def _pack(indices: np.ndarray, nbits: int) -> np.ndarray:
    bits = ((indices[:, None] >> np.arange(nbits)) & 1).astype(np.uint8).ravel()
    return np.packbits(bits, bitorder="little")


@keeps_rng
def check_09_unpack(unpack, package_entry: dict | None = None, dense=None) -> None:
    """Exercise 2: the first ``count`` ``nbits``-bit indices of a packed uint8 array, least
    significant bit first; with ``package_entry`` (a compressed layer of the package: its
    ``indices`` and ``lut``) and its ``dense`` weight, the layer is rebuilt from them too."""
    label = "Exercise 2"
    rng = np.random.default_rng(2)
    first = attempt(unpack, _pack(np.arange(8) % 16, 4), 4, 8)
    if first is NOT_ATTEMPTED:
        return not_attempted(label)
    for nbits in (4, 6):
        want = rng.integers(0, 2 ** nbits, 37)
        packed = _pack(want, nbits)
        where = f"{label}: unpack(packed, nbits={nbits}, count={len(want)})"
        got = np.asarray(attempt(unpack, packed, nbits, len(want))).ravel()
        per_byte = (packed & (2 ** nbits - 1))[:len(want)]
        byte_message = ("an index does not sit in its own byte: the indices are one stream of "
                        f"bits ({nbits} per index, so one may straddle two bytes); unpack all "
                        "the bits first, then group them nbits at a time")
        if got.shape == per_byte.shape and np.array_equal(got, per_byte):
            raise ExerciseError(f"{where} is off: {byte_message}")
        if got.shape != want.shape:
            raise ExerciseError(f"{where} gave {got.size} indices, expected {want.size}: the "
                                "last byte's padding bits are not an index (keep the first "
                                "nbits * count bits)")
        if np.array_equal(got, want):
            continue
        msb = np.unpackbits(packed)[:nbits * len(want)].reshape(-1, nbits)
        lsb = np.unpackbits(packed, bitorder="little")[:nbits * len(want)].reshape(-1, nbits)
        weights = 1 << np.arange(nbits)
        mistakes = [
            (msb @ weights[::-1], "the bits are read most significant first; Core ML packs "
                                  "least significant bit first (bitorder='little')"),
            (msb @ weights, "the bytes are unpacked most significant bit first: use "
                            "np.unpackbits(packed, bitorder='little')"),
            (lsb @ weights[::-1], "each index's bits are reversed: bit b of an index has weight "
                                  "2**b (the first bit read is the least significant)"),
        ]
        for wrong, message in mistakes:
            if wrong.shape == got.shape and np.array_equal(got, wrong):
                raise ExerciseError(f"{where} is off: {message}")
        raise ExerciseError(f"{where} is off: {got[:6].tolist()} ... vs {want[:6].tolist()} "
                            "...; unpack the bits least significant first and give bit b of "
                            "each group the weight 2**b")
    if package_entry is not None:
        count = int(np.prod(np.shape(dense)))
        rebuilt = np.asarray(package_entry["lut"])[unpack(package_entry["indices"], 6, count)]
        if not np.array_equal(rebuilt.reshape(np.shape(dense)).astype(np.float32),
                              np.asarray(dense, np.float32)):
            raise ExerciseError(f"{label}: right on the small test, wrong on the package's "
                                "indices")
        print(f"{label}: correct (and it rebuilds the package's 6-bit layer exactly)")
        return None
    print(f"{label}: correct")
    return None
