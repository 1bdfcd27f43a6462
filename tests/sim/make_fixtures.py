#!/usr/bin/env python3
"""Fixtures for `dsv3c sim run`, the PTX emulator: an oracle written independently of it.

What it checks. Each case is one CUDA kernel from tests/sim/kernels/ (written the way ordinary CUDA
code is written, not taken from this project's kernel generator), compiled to PTX by NVRTC for
`--gpu-architecture=sm_90a -std=c++17`, with inputs drawn from a fixed NumPy seed and the expected
outputs computed here, in float64 or in exact rational arithmetic, from the CUDA/PTX semantics as
NVIDIA documents them:

  saxpy            grid-stride loop, bounds check on n < allocation, f32 scalar; the compiler's
                   fma.rn.f32 is reproduced exactly (one rounding), so the comparison is exact
  int_ops          shifts, signed/unsigned min/max and div/rem with negatives, popc, clz, ffs,
                   brev, mul.hi, wrapping products, byte_perm (prmt), sad, a 64-bit product; exact
  transcendental   expf, __expf, logf, __logf, rsqrtf, sqrtf, tanhf, sinf, cosf, __sinf, __cosf,
                   __fdividef and x/y, each held to the CUDA Programming Guide's error bound
  f64_ops          fma, div, sqrt, f64 scalar, f64->f32->f64, floor, rint, f64->s64 (rz and rn), with
                   subnormals, ties and f32 overflow; exact (all are IEEE-correctly rounded)
  warp_reduce      shfl.sync bfly/down/up/idx (also width 8), vote ballot/any/all; the shuffle
                   trees are replayed in float32, so the comparison is exact
  block_reduce     shared-memory tree reduction with bar.sync (replayed exactly), global atomics:
                   f32 add (order-dependent: tolerance), u32 add/or/xor/and, s32 max/min, and the
                   old values returned by atomicAdd used as unique tickets
  matmul_tiled     16x16 tiles in dynamic shared memory (--smem 2048), M, N, K = 37, 29, 45; the
                   per-thread fma chain is replayed exactly
  transpose        32x33 padded shared tile, 2-D grid and block, rows x cols = 70 x 45, random bit
                   patterns (NaN payloads included) compared bit for bit
  thread_ids       3-D grid (2,3,2) of 3-D blocks (8,2,3): tid/ctaid/ntid/nctaid, %laneid, and
                   shfl/ballot/activemask on a block of 48 threads (a full warp and a partial one)
  mma_bf16_tile    one warp, mma.sync.m16n8k16 bf16 -> f32, random values (tolerance)
  mma_bf16_gemm    32x16x32 over 4 warps in 2 blocks, K looped in two steps (tolerance)
  mma_bf16_exact   same shape, values whose products and sums are exact in any order (exact)
  mma_e4m3_exact   one warp, mma.sync.m16n8k32 e4m3 -> f32, exactly representable sums (exact)
  mma_e4m3_gemm    32x16x64 over 4 warps, random e4m3 normals (tolerance)
  cvt_pack         cvt.rn.bf16x2.f32, cvt.rn.satfinite.e4m3x2.f32, cvt.rn.f16x2.e4m3x2 on ties,
                   subnormals, +-1000 (saturation), +-inf, NaN, -0 and random values; exact bits,
                   NaN matched as "any NaN"
  oob_store        expect_failure: thread n stores one element past the end of an out: buffer
  oob_load         expect_failure: thread n-1 loads one element past the end of an in: buffer

Each case folder holds kernel.ptx, the input .bin files (little-endian raw), expected_*.bin and
case.json: entry, grid, block, smem, the ordered arguments in the `sim run` syntax with paths
relative to the case folder (outputs are names to be placed in a scratch folder), and for each
output the expected file, its dtype and the tolerance with its justification. tests/sim.rs runs them.

Tolerances. "exact" compares bits (NaN matches any NaN of the same format). Otherwise an element
passes when |got - expected| <= abs + rel * |expected| + ulp * ulp_of(max(|got|, |expected|)), the
ulp measured in the output's format. For a library function whose documented maximum error is N ulp
(distance from the correctly rounded result), ulp = N + 0.5 against the float64 value.

Sources. Fragment layouts: PTX ISA 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating
point type" and 9.7.14.5.10 "Matrix Fragments for mma.m16n8k32" (quoted in the .cu files). cvt
packing: PTX ISA "cvt": for .bf16x2 the value converted from a goes to d[31:16] and b to d[15:0];
for .e4m3x2, a to d[15:8] and b to d[7:0]; .satfinite: NaN -> NaN, |x| > MAX_NORM -> sign-preserved
MAX_NORM. Error bounds: CUDA C++ Programming Guide, Mathematical Functions appendix (single
precision standard functions and intrinsics). The mma tolerance does not assume an exact f32
accumulation (the ISA does not promise one; measured tensor cores truncate, and Hopper's FP8 path
keeps fewer bits), which is why every mma shape also has a case whose sums are exact at 14 bits.

How to rerun (from the project root; needs the CUDA wheels of scripts/nvrtc-gate.sh):
    target/cuda-wheels/bin/python -m pip install numpy ml_dtypes
    target/cuda-wheels/bin/python tests/sim/make_fixtures.py           # rewrite tests/sim/fixtures/
    target/cuda-wheels/bin/python tests/sim/make_fixtures.py --check   # exit 1 if anything differs
The output is deterministic for a given NVRTC (12.9 wrote the committed PTX); where an exact
expectation depends on the instructions NVRTC chose (fma contraction), the script asserts them.
"""

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

try:
    import ml_dtypes  # only to cross-check the exact converters below
except ImportError:  # pragma: no cover
    ml_dtypes = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KERNELS = HERE / "kernels"
SEED = 20250611
sys.path.insert(0, str(HERE))
from nvrtc_tools import NVRTC_OPTIONS, Nvrtc, ptxas_check  # noqa: E402


# ----------------------------------------------------------------------------------------------
# NVRTC through ctypes
# ----------------------------------------------------------------------------------------------


def entry_body(ptx: str, entry: str) -> str:
    m = re.search(r"\.entry\s+" + re.escape(entry) + r"\(.*?\n}\n", ptx, re.S)
    assert m, f"no .entry {entry} in the PTX"
    return m.group(0)


def f32_instructions(body: str):
    """The f32 arithmetic opcodes of an entry (moves, loads, stores, compares and selects left out)."""
    ops = re.findall(r"^\s*(?:@%p\d+\s+)?([a-z0-9.]+\.f32)\s", body, re.M)
    return [o for o in ops if not o.startswith(("ld.", "st.", "mov.", "setp.", "selp.", "cvt.", "atom.", "red."))]


# ----------------------------------------------------------------------------------------------
# Exact IEEE-style rounding (independent of NumPy's and of ml_dtypes' conversions)
# ----------------------------------------------------------------------------------------------


class Fmt:
    def __init__(self, name, p, emin, ebits, maxval):
        self.name, self.p, self.emin, self.ebits, self.max = name, p, emin, ebits, Fraction(maxval)
        self.bias = 1 - emin


F64 = Fmt("f64", 53, -1022, 11, (2 - Fraction(1, 2**52)) * 2**1023)
F32 = Fmt("f32", 24, -126, 8, (2 - Fraction(1, 2**23)) * 2**127)
F16 = Fmt("f16", 11, -14, 5, 65504)
BF16 = Fmt("bf16", 8, -126, 8, (2 - Fraction(1, 2**7)) * 2**127)
E4M3 = Fmt("e4m3", 4, -6, 4, 448)  # e4m3 "fn": no infinity, S.1111.111 is NaN, max normal 448


def floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    elif Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def round_rne(q: Fraction, fmt: Fmt) -> Fraction:
    """q rounded to nearest, ties to even, with fmt's precision and subnormal quantum; no overflow."""
    if q == 0:
        return Fraction(0)
    a = abs(q)
    e = max(floor_log2(a), fmt.emin)
    quantum = Fraction(2) ** (e - fmt.p + 1)
    m = a / quantum
    n = m.numerator // m.denominator
    rem = m - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2 == 1):
        n += 1
    r = n * quantum
    return r if q > 0 else -r


def encode(v: Fraction, negative: bool, fmt: Fmt) -> int:
    """Bits of a value that is exactly representable in fmt (v >= 0 magnitude, sign separate)."""
    sign = 1 << (fmt.ebits + fmt.p - 1) if negative else 0
    if v == 0:
        return sign
    e = floor_log2(v)
    if e < fmt.emin:
        m = v / Fraction(2) ** (fmt.emin - fmt.p + 1)
        assert m.denominator == 1
        return sign | int(m)
    m = v / Fraction(2) ** (e - fmt.p + 1) - 2 ** (fmt.p - 1)
    assert m.denominator == 1 and 0 <= m < 2 ** (fmt.p - 1)
    return sign | ((e + fmt.bias) << (fmt.p - 1)) | int(m)


def decode(bits: int, fmt: Fmt):
    """Value of bits in fmt, as a Fraction, or None for NaN (and +-inf as float)."""
    mbits = fmt.p - 1
    sign = -1 if bits >> (fmt.ebits + mbits) & 1 else 1
    ef = (bits >> mbits) & ((1 << fmt.ebits) - 1)
    m = bits & ((1 << mbits) - 1)
    if fmt is E4M3:
        if ef == 15 and m == 7:
            return None
    elif ef == (1 << fmt.ebits) - 1:
        return None if m else sign * math.inf
    if ef == 0:
        return sign * Fraction(m) * Fraction(2) ** (fmt.emin - mbits)
    return sign * (1 + Fraction(m, 2**mbits)) * Fraction(2) ** (ef - fmt.bias)


def f32_bits(x) -> int:
    return int(np.float32(x).view(np.uint32))


def f32_from_bits(b) -> np.float32:
    return np.uint32(b).view(np.float32)


def to_f32(q: Fraction, zero_negative=False) -> np.float32:
    """Correctly rounded f32 of an exact value; overflow to +-inf."""
    r = round_rne(q, F32)
    if abs(r) > F32.max:
        return np.float32(math.copysign(math.inf, q))
    if r == 0:
        return np.float32(-0.0 if (q < 0 or (q == 0 and zero_negative)) else 0.0)
    return np.float32(float(r))  # exact: r is representable


def fma32(a, b, c) -> np.float32:
    """fma.rn.f32: a*b+c with one rounding, IEEE signed-zero rules."""
    a, b, c = np.float32(a), np.float32(b), np.float32(c)
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:
        prod_neg = math.copysign(1, a) * math.copysign(1, b) < 0
        both_neg = prod_neg and math.copysign(1, c) < 0 and float(a) * float(b) == 0
        return np.float32(-0.0 if both_neg else 0.0)
    return to_f32(exact)


def to_f64(q: Fraction) -> float:
    r = round_rne(q, F64)
    assert abs(r) <= F64.max
    if r == 0:
        return -0.0 if q < 0 else 0.0
    return float(r)


def f32_to_bf16_bits(x: np.float32) -> int:
    """cvt.rn.bf16.f32 (no .satfinite): RNE, overflow to inf, subnormals kept."""
    b = f32_bits(x)
    neg = bool(b >> 31)
    if np.isnan(x):
        return 0x7FFF  # any NaN is accepted by the comparison
    if np.isinf(x):
        return 0xFF80 if neg else 0x7F80
    r = round_rne(Fraction(float(x)), BF16)
    if abs(r) > BF16.max:
        return 0xFF80 if neg else 0x7F80
    return encode(abs(r), neg, BF16)


def f32_to_e4m3_satfinite_bits(x: np.float32) -> int:
    """cvt.rn.satfinite.e4m3x2.f32, one lane: NaN -> NaN, |x| > MAX_NORM (incl. inf) -> +-448, else RNE."""
    neg = bool(f32_bits(x) >> 31)
    if np.isnan(x):
        return 0x7F
    if np.isinf(x) or abs(Fraction(float(x))) > E4M3.max:
        return 0xFE if neg else 0x7E
    r = round_rne(Fraction(float(x)), E4M3)
    assert abs(r) <= E4M3.max
    return encode(abs(r), neg, E4M3)


def e4m3_to_f16_bits(b: int) -> int:
    v = decode(b, E4M3)
    if v is None:
        return 0x7FFF
    return encode(abs(v), bool(b & 0x80), F16)


def cross_check_converters():
    """The exact converters agree with NumPy (f32) and ml_dtypes (bf16, e4m3) where those apply."""
    rng = np.random.default_rng(SEED + 999)
    xs = (rng.standard_normal(4000) * np.exp2(rng.integers(-40, 40, 4000))).astype(np.float32)
    xs = np.concatenate([xs, rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32).view(np.float32)])
    for x in xs[:3000]:
        if np.isfinite(x):
            d = float(x) * 1.0000001
            assert to_f32(Fraction(d)) == np.float32(d) or np.isinf(np.float32(d))
    if ml_dtypes is None:
        print("  (ml_dtypes not installed: bf16/e4m3 cross-check skipped)")
        return
    for x in xs:
        if not np.isfinite(x):
            continue
        got = f32_to_bf16_bits(x)
        ref = int(np.array([x]).astype(ml_dtypes.bfloat16).view(np.uint16)[0])
        assert got == ref or (got & 0x7FFF) == 0x7F80 == (ref & 0x7FFF), (x, hex(got), hex(ref))
        if abs(float(x)) < 448:
            got = f32_to_e4m3_satfinite_bits(x)
            ref = int(np.array([x], dtype=np.float32).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)[0])
            assert got == ref, (x, hex(got), hex(ref))
    for b in range(256):
        if b & 0x7F != 0x7F:
            ref = np.array([b], dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float16).view(np.uint16)[0]
            assert e4m3_to_f16_bits(b) == int(ref), b


# ----------------------------------------------------------------------------------------------
# Case writer
# ----------------------------------------------------------------------------------------------

NP_DTYPE = {
    "f32": "<f4", "f64": "<f8", "u8": "u1", "u16": "<u2", "u32": "<u4", "s32": "<i4", "s64": "<i8",
    "bf16": "<u2", "f16": "<u2", "e4m3": "u1",
}


class Case:
    def __init__(self, name, source, entry, grid, block, description, smem=0):
        self.name, self.source, self.entry = name, source, entry
        self.grid, self.block, self.smem, self.description = grid, block, smem, description
        self.args, self.outputs, self.files = [], [], {}
        self.failure = None

    def _file(self, fname, array, dtype):
        a = np.ascontiguousarray(np.asarray(array).astype(NP_DTYPE[dtype]))
        assert fname not in self.files, fname
        self.files[fname] = a.tobytes()
        return a

    def scalar(self, ty, value):
        assert ty in ("u32", "s32", "u64", "f32", "f64")
        if ty == "f32":
            assert float(np.float32(value)) == value, "an f32 scalar must be exact in f32"
        self.args.append(f"{ty}:{value!r}" if ty.startswith("f") else f"{ty}:{int(value)}")

    def input(self, fname, array, dtype):
        self._file(fname, array, dtype)
        self.args.append(f"in:{fname}")

    def inout(self, fname, array, dtype, out_name):
        self._file(fname, array, dtype)
        self.args.append(f"inout:{fname}:{out_name}")

    def output(self, out_name, nbytes):
        self.args.append(f"out:{nbytes}:{out_name}")

    def compare(self, out_name, expected, dtype, tolerance, why, expected_dtype=None):
        expected_dtype = expected_dtype or dtype
        stem = out_name[: -len(".bin")] if out_name.endswith(".bin") else out_name
        efile = f"expected_{stem}.bin"
        a = self._file(efile, expected, expected_dtype)
        # the expected file has as many elements as the output buffer
        size = np.dtype(NP_DTYPE[dtype]).itemsize
        nbytes = None
        for arg in self.args:
            parts = arg.split(":")
            if parts[0] == "out" and parts[2] == out_name:
                nbytes = int(parts[1])
            elif parts[0] == "inout" and parts[2] == out_name:
                nbytes = len(self.files[parts[1]])
        assert nbytes is not None, f"{out_name} is not an output"
        assert nbytes == a.size * size, (out_name, nbytes, a.size, size)
        entry = {"output": out_name, "expected": efile, "dtype": dtype}
        if expected_dtype != dtype:
            entry["expected_dtype"] = expected_dtype
        entry["tolerance"] = tolerance
        entry["why"] = why
        self.outputs.append(entry)

    def expect_failure(self, faulting_line, why):
        self.failure = {"stderr_regex": r"(?i)line \d+", "faulting_ptx_line": faulting_line, "why": why}

    def write(self, root: Path, ptx: str):
        d = root / self.name
        d.mkdir(parents=True)
        (d / "kernel.ptx").write_text(ptx)
        for fname, data in self.files.items():
            (d / fname).write_bytes(data)
        doc = {
            "case": self.name,
            "description": self.description,
            "source": f"tests/sim/kernels/{self.source}",
            "nvrtc_options": NVRTC_OPTIONS,
            "ptx": "kernel.ptx",
            "entry": self.entry,
            "grid": self.grid,
            "block": self.block,
            "smem": self.smem,
            "args": self.args,
            "outputs": self.outputs,
            "expect_failure": self.failure is not None,
        }
        if self.failure:
            doc.update(self.failure)
        (d / "case.json").write_text(json.dumps(doc, indent=2) + "\n")


def rng_for(name):
    return np.random.default_rng([SEED, sum(ord(c) * 131**i for i, c in enumerate(name)) % 2**32])


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------


def case_saxpy(ptx):
    body = entry_body(ptx, "saxpy")
    assert f32_instructions(body) == ["fma.rn.f32"], f32_instructions(body)
    rng = rng_for("saxpy")
    n, alloc, a = 1000, 1024, -1.75
    x = rng.uniform(-4, 4, alloc).astype(np.float32)
    y = rng.uniform(-4, 4, alloc).astype(np.float32)
    x[:4] = [0.0, -0.0, 1e-30, 3.0e38]
    y[:4] = [-0.0, -0.0, 1e-38, -3.0e38]
    exp = y.copy()
    for i in range(n):
        exp[i] = fma32(x[i], np.float32(a), y[i])
    c = Case("saxpy", "saxpy.cu", "saxpy", "3", "128",
             "y = a*x + y, grid-stride loop over n=1000 of a 1024-element y (the tail must stay put); "
             "3 blocks of 128 threads")
    c.scalar("s32", n)
    c.scalar("f32", a)
    c.input("x.bin", x, "f32")
    c.inout("y.bin", y, "f32", "y_out.bin")
    c.compare("y_out.bin", exp, "f32", "exact",
              "NVRTC contracts a*x+y into one fma.rn.f32 (asserted on the PTX): a single IEEE rounding, "
              "reproduced exactly here; elements 1000..1023 are the input unchanged")
    return [c]


def case_int_ops(ptx):
    rng = rng_for("int_ops")
    n = 200
    M32 = 0xFFFFFFFF
    imin, imax = -(2**31), 2**31 - 1
    a = rng.integers(imin, imax + 1, n, dtype=np.int64)
    b = rng.integers(imin, imax + 1, n, dtype=np.int64)
    small = rng.integers(-1000, 1000, n)
    a[100:150] = small[100:150]  # small operands, so that div/rem have small quotients too
    b[100:150] = rng.integers(-40, 40, 50)
    special = [(imin, 1), (imin, 2), (imin, -2), (imin, imax), (imax, -1), (imax, imin), (0, 5), (0, -1),
               (-1, 1), (-7, 2), (7, -2), (-7, -2), (-7, 7), (1, 32), (-1, 31), (123456789, 33), (-8, 3),
               (5, -5), (0x12345678, 0x0F0F0F0F), (-0x12345678, 0x7FFFFFF1), (1 << 30, 1 << 30), (-1, -1),
               (imin, imin), (65536, 65536), (-65536, 65537)]
    for i, (x, y) in enumerate(special):
        a[i], b[i] = x, y
    b[b == 0] = 3
    bad = (a == imin) & (b == -1)
    b[bad] = -3
    bias = -7

    def s32(v):
        v &= M32
        return v - (1 << 32) if v >> 31 else v

    out = np.zeros((n, 22), dtype=np.int64)
    for i in range(n):
        x, y = int(a[i]), int(b[i])
        ux, uy = x & M32, y & M32
        s = uy & 31
        q = abs(x) // abs(y)
        if (x < 0) != (y < 0):
            q = -q
        sel = 0x6152
        by = [(ux >> (8 * k)) & 0xFF for k in range(4)] + [(uy >> (8 * k)) & 0xFF for k in range(4)]
        perm = sum(by[(sel >> (4 * k)) & 7] << (8 * k) for k in range(4))
        out[i] = [
            s32(ux << s), s32(ux >> s), x >> s, min(x, y), max(x, y), s32(min(ux, uy)), s32(max(ux, uy)),
            s32(q), s32(x - q * y), s32(ux // uy), s32(ux % uy), bin(ux).count("1"), 32 - ux.bit_length(),
            0 if ux == 0 else (ux & -ux).bit_length(), s32(int(f"{ux:032b}"[::-1], 2)),
            s32(ux * uy + (bias & M32)), s32((x * y) >> 32), s32((ux * uy) >> 32),
            s32((ux & ~uy & M32) ^ (ux | ((uy << 3) & M32))), s32(perm), s32(abs(x - y) + 5), s32((x * y) >> 17),
        ]
    c = Case("int_ops", "int_ops.cu", "int_ops", "4", "64",
             "22 integer results per element for 200 elements (4 blocks of 64: 56 idle threads), incl. INT_MIN, "
             "INT_MAX, negative divisors, shift counts >= 32 masked to 5 bits, a negative s32 scalar")
    c.input("a.bin", a, "s32")
    c.input("b.bin", b, "s32")
    c.scalar("s32", bias)
    c.scalar("u32", n)
    c.output("out.bin", n * 22 * 4)
    c.compare("out.bin", out.reshape(-1), "s32", "exact",
              "integer semantics: C++ truncating division, two's-complement wrap on unsigned values, "
              "arithmetic >> on signed, __byte_perm selector 0x6152 (bytes x0..x3, y0..y3), "
              "__sad = |x-y| + z, __mulhi/__umulhi = high 32 bits of the 64-bit product")
    return [c]


def case_transcendental(ptx):
    body = entry_body(ptx, "transcendental")
    assert "sqrt.rn.f32" in body and "div.rn.f32" in body, "NVRTC's default -prec-sqrt/-prec-div changed"
    rng = rng_for("transcendental")
    n = 256
    x = rng.uniform(-10, 10, n).astype(np.float32)
    x[:12] = [0.0, -0.0, 1e-3, -1e-3, 10.0, -10.0, 0.5, 0.6931472, -0.6931472, 1.5707964, 3.1415927, -7.5]
    p = np.exp2(rng.uniform(-10, 10, n)).astype(np.float32)
    p[:8] = [1.0, 2.0, 0.5, 4.0, 2.0**-10, 2.0**10, 0.75, 1.5]
    t = rng.uniform(-3.14159, 3.14159, n).astype(np.float32)
    t[:4] = [0.0, 1.5707964, -1.5707964, 3.14159]
    X, P, T = x.astype(np.float64), p.astype(np.float64), t.astype(np.float64)
    xmax = float(np.max(np.abs(X)))
    fast_exp_ulp = 2 + math.floor(abs(1.173 * xmax))
    c = Case("transcendental", "transcendental.cu", "transcendental", "3", "96",
             "13 single-precision math functions / intrinsics on 256 elements (3 blocks of 96): x in [-10, 10], "
             "p in [2^-10, 2^10], t in [-pi, pi]")
    c.input("x.bin", x, "f32")
    c.input("p.bin", p, "f32")
    c.input("t.bin", t, "f32")
    c.scalar("u32", n)
    guide = "CUDA C++ Programming Guide, Mathematical Functions appendix"
    specs = [
        ("expf", np.exp(X), {"ulp": 2.5}, f"{guide}: expf max 2 ulp (full range); +0.5 ulp to the exact value"),
        ("fast_expf", np.exp(X), {"ulp": fast_exp_ulp + 0.5},
         f"{guide} (intrinsics): __expf max 2 + floor(|1.173 x|) ulp = {fast_exp_ulp} for |x| <= {xmax}; +0.5"),
        ("logf", np.log(P), {"ulp": 1.5}, f"{guide}: logf max 1 ulp; +0.5"),
        ("fast_logf", np.log(P), {"abs": 2**-21.41, "ulp": 3.5},
         f"{guide} (intrinsics): __logf max abs error 2^-21.41 for x in [0.5, 2], otherwise 3 ulp; both summed"),
        ("rsqrtf", 1 / np.sqrt(P), {"ulp": 2.5}, f"{guide}: rsqrtf max 2 ulp; +0.5"),
        ("sqrtf", None, "exact", f"{guide}: sqrtf is IEEE-rounded with -prec-sqrt=true (NVRTC's default; "
                                 "sqrt.rn.f32 asserted on the PTX)"),
        ("tanhf", np.tanh(X), {"ulp": 2.5}, f"{guide}: tanhf max 2 ulp; +0.5"),
        ("sinf", np.sin(X), {"ulp": 2.5}, f"{guide}: sinf max 2 ulp (full range); +0.5"),
        ("cosf", np.cos(X), {"ulp": 2.5}, f"{guide}: cosf max 2 ulp (full range); +0.5"),
        ("fast_sinf", np.sin(T), {"abs": 2**-21.41}, f"{guide} (intrinsics): __sinf max abs error 2^-21.41 "
                                                     "for x in [-pi, pi]"),
        ("fast_cosf", np.cos(T), {"abs": 2**-21.19}, f"{guide} (intrinsics): __cosf max abs error 2^-21.19 "
                                                     "for x in [-pi, pi]"),
        ("fdividef", X / P, {"ulp": 2.5}, f"{guide} (intrinsics): __fdividef(x, y) max 2 ulp for |y| in "
                                         "[2^-126, 2^126]; +0.5"),
        ("div", None, "exact", f"{guide}: x/y is IEEE-rounded with -prec-div=true (NVRTC's default; div.rn.f32 "
                               "asserted on the PTX)"),
    ]
    for name, _, _, _ in specs:
        c.output(f"{name}.bin", n * 4)
    for name, ref, tol, why in specs:
        if name == "sqrtf":
            exp = np.array([to_f32(round_sqrt_exact(Fraction(float(v)))) for v in p], dtype=np.float32)
            # sqrt needs no more than 2p+2 bits for correct double rounding: NumPy's float64 agrees
            assert np.array_equal(exp, np.sqrt(P).astype(np.float32))
            c.compare(f"{name}.bin", exp, "f32", tol, why)
        elif name == "div":
            # IEEE: the sign of a zero quotient is the exclusive or of the operands' signs.
            exp = np.array([to_f32(Fraction(float(u)) / Fraction(float(v)),
                                   zero_negative=math.copysign(1, u) * math.copysign(1, v) < 0)
                            for u, v in zip(x, p)], dtype=np.float32)
            c.compare(f"{name}.bin", exp, "f32", tol, why)
        else:
            c.compare(f"{name}.bin", ref, "f32", tol, why, expected_dtype="f64")
    return [c]


def round_sqrt_exact(q: Fraction) -> Fraction:
    """sqrt(q) to 80 bits, rounded away from any f32 tie (a non-square's sqrt is never a tie)."""
    assert q > 0
    scale = 2**200
    v = q * scale * scale
    r = math.isqrt(v.numerator // v.denominator)
    exact = r * r * v.denominator == v.numerator
    return Fraction(r, scale) if exact else Fraction(2 * r + 1, 2 * scale)


def case_f64_ops(ptx):
    rng = rng_for("f64_ops")
    n = 37
    sgn = lambda k: np.where(rng.random(k) < 0.5, -1.0, 1.0)  # noqa: E731
    a = sgn(n) * rng.uniform(1, 2, n) * np.exp2(rng.integers(-30, 30, n))
    b = sgn(n) * rng.uniform(1, 2, n) * np.exp2(rng.integers(-30, 30, n))
    c_ = sgn(n) * rng.uniform(0, 1e6, n)
    f32max = float(np.finfo(np.float32).max)
    specials_a = [-0.0, 5e-324, 2.2250738585072014e-308, 1e-310, 1 + 2**-24, 1 + 3 * 2**-24, 1e39, 1e-40,
                  f32max + 2.0**103, f32max + 2.0**102, -2.5, 2.0**60, -1.0]
    for i, v in enumerate(specials_a):
        a[i] = v
    b[1], b[2], b[3] = 0.75, -0.5, 2.0**-30  # subnormal products and quotients
    b[4] = 0.0  # x / 0 = inf
    b[12] = -0.0  # -1 / -0 = +inf
    specials_c = [2.5, 3.5, -2.5, -0.5, 0.5, 0.49999999999999994, 1e15 + 0.5, 2.0**52 + 1, -1e15 - 0.5, -3.5,
                  1e-300, -7.0]
    for i, v in enumerate(specials_c):
        c_[i] = v
    c_[1] = -1e-320  # fma(5e-324, 0.75, -1e-320): subnormal in, subnormal out
    s = 0.1
    out = np.zeros((n, 8))
    iout = np.zeros((n, 2), dtype=np.int64)
    with np.errstate(all="ignore"):
        for i in range(n):
            x, y, z = float(a[i]), float(b[i]), float(c_[i])
            out[i, 0] = to_f64(Fraction(x) * Fraction(y) + Fraction(z))
            out[i, 1] = np.float64(x) / np.float64(y)
            out[i, 2] = math.sqrt(abs(x))
            out[i, 3] = x * s
            out[i, 4] = x + y
            f = np.float32(x)
            ref = to_f32(Fraction(x)) if math.isfinite(x) and x != 0 else np.float32(x)
            assert f32_bits(f) == f32_bits(ref), (x, f, ref)
            out[i, 5] = float(f)
            out[i, 6] = np.floor(x)  # keeps -0.0 (math.floor returns the integer 0)
            out[i, 7] = float(np.rint(z))
            iout[i] = [math.trunc(z), int(np.rint(z))]
    assert out[1, 0] != 0 and abs(out[1, 0]) < 2.2250738585072014e-308
    cs = Case("f64_ops", "f64_ops.cu", "f64_ops", "3", "16",
              "f64 fma/div/sqrt/scalar mul/add, f64->f32->f64, floor, rint, (long long) and llrint on 37 elements "
              "(3 blocks of 16) with subnormals, signed zeros, division by zero, f32 ties and overflow; "
              "f64 and u64 scalars")
    cs.input("a.bin", a, "f64")
    cs.input("b.bin", b, "f64")
    cs.input("c.bin", c_, "f64")
    cs.scalar("f64", s)
    cs.scalar("u64", n)
    cs.output("out.bin", n * 8 * 8)
    cs.output("iout.bin", n * 2 * 8)
    cs.compare("out.bin", out.reshape(-1), "f64", "exact",
               "fma.rn/div.rn/sqrt.rn/mul/add.f64 and cvt.rn.f32.f64 are IEEE-correctly rounded (fma and the f32 "
               "conversion computed here exactly with rationals), floor = cvt.rmi, rint = cvt.rni (ties to even)")
    cs.compare("iout.bin", iout.reshape(-1), "s64", "exact",
               "cvt.rzi.s64.f64 truncates, cvt.rni.s64.f64 rounds half to even")
    return [cs]


def case_warp_reduce(ptx):
    rng = rng_for("warp_reduce")
    blocks, tpb = 3, 128
    n = blocks * tpb
    x = rng.standard_normal(n).astype(np.float32)
    v = rng.integers(-100, 101, n).astype(np.int64)
    x[32:64] = np.abs(x[32:64]) + np.float32(0.25)  # warp 1: ballot all ones
    x[64:96] = -np.abs(x[64:96])  # warp 2: ballot zero
    x[64] = -0.0
    v[0:32] = np.clip(v[0:32], -100, 90)  # warp 0: any(v > 90) false
    v[32:64] = np.clip(v[32:64], -94, 100)  # warp 1: all(v > -95) true
    v[96:128] = np.clip(v[96:128], -94, 90)
    v[100] = 95
    xs = x.reshape(-1, 32)
    vs = v.reshape(-1, 32)
    lanes = np.arange(32)
    s = xs.copy()
    m = 16
    while m >= 1:
        s = (s + s[:, lanes ^ m]).astype(np.float32)
        m >>= 1
    d = xs.copy()
    off = 16
    while off >= 1:
        src = np.where(lanes + off < 32, lanes + off, lanes)
        d = (d + d[:, src]).astype(np.float32)
        off >>= 1
    scan = vs.copy()
    off = 1
    while off < 32:
        up = scan[:, np.where(lanes >= off, lanes - off, lanes)]
        scan = np.where(lanes >= off, scan + up, scan)
        off <<= 1
    ballot = [sum(1 << k for k in range(32) if xs[w, k] > 0) for w in range(xs.shape[0])]
    votes = np.stack([np.repeat((vs > 90).any(axis=1), 32), np.repeat((vs > -95).all(axis=1), 32)], axis=1)
    gather = xs[:, (lanes * 7 + 3) & 31]
    seg = np.where(lanes % 8 + 3 < 8, lanes + 3, lanes)
    seg_down = xs[:, seg]
    c = Case("warp_reduce", "warp_reduce.cu", "warp_reduce", "3", "128",
             "12 full warps (3 blocks of 128): xor-butterfly and shfl_down f32 sums on every lane, shfl_up "
             "inclusive int scan, ballot (incl. all-ones and zero), any/all, indexed gather, width-8 shfl_down")
    c.input("x.bin", x, "f32")
    c.input("v.bin", v, "s32")
    for name, nbytes in [("xor_sum", n * 4), ("down_sum", n * 4), ("scan", n * 4), ("ballot", n // 32 * 4),
                         ("votes", n * 8), ("gather", n * 4), ("seg_down", n * 4)]:
        c.output(f"{name}.bin", nbytes)
    c.compare("xor_sum.bin", s.reshape(-1), "f32", "exact",
              "v += shfl.bfly(v, m) for m = 16..1 replayed in float32 (f32 addition is commutative, so all lanes "
              "agree bit for bit)")
    c.compare("down_sum.bin", d.reshape(-1), "f32", "exact",
              "v += shfl.down(v, off) for off = 16..1 replayed in float32; a lane whose source lane + off is past "
              "31 reads its own value (PTX shfl.sync: out-of-range source -> own value)")
    c.compare("scan.bin", scan.reshape(-1), "s32", "exact", "Hillis-Steele inclusive scan with shfl.up")
    c.compare("ballot.bin", np.array(ballot, dtype=np.uint64), "u32", "exact", "bit k = predicate of lane k")
    c.compare("votes.bin", votes.reshape(-1).astype(np.int64), "s32", "exact", "__any_sync / __all_sync return 1/0")
    c.compare("gather.bin", gather.reshape(-1), "f32", "exact", "shfl.idx from lane (7 lane + 3) mod 32")
    c.compare("seg_down.bin", seg_down.reshape(-1), "f32", "exact",
              "__shfl_down_sync(.., 3, width 8): within each 8-lane segment, lanes 5..7 keep their own value")
    return [c]


def case_block_reduce(ptx):
    rng = rng_for("block_reduce")
    bs, blocks, n = 256, 5, 1200
    x = rng.standard_normal(n).astype(np.float32)
    u = rng.integers(0, 2**32, n, dtype=np.uint64)
    u[:4] = [0, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF]
    partial = np.zeros(blocks, dtype=np.float32)
    for blk in range(blocks):
        sd = np.zeros(bs, dtype=np.float32)
        lo, hi = blk * bs, min(n, (blk + 1) * bs)
        sd[: hi - lo] = x[lo:hi]
        s = bs // 2
        while s > 0:
            sd[:s] = (sd[:s] + sd[s: 2 * s]).astype(np.float32)
            s >>= 1
        partial[blk] = sd[0]
    total = float(np.sum(partial.astype(np.float64)))
    gamma = (blocks - 1) * 2.0**-24 / (1 - (blocks - 1) * 2.0**-24)
    total_tol = gamma * float(np.sum(np.abs(partial.astype(np.float64)))) * 1.01
    ui = [int(w) for w in u]
    orv = 0
    xor = 0
    andv = 0xFFFFFFFF
    for w in ui:
        orv |= 1 << (w & 31)
        xor ^= w
        andv &= w | 0x10000000
    as_s32 = [w - (1 << 32) if w >> 31 else w for w in ui]
    counters0 = np.array([0, 0, 0, 0, 0, 0xFFFFFFFF], dtype=np.uint64)
    counters = np.array([sum(ui) & 0xFFFFFFFF, n, n, orv, xor, andv], dtype=np.uint64)
    extremes0 = np.array([-(2**31), 2**31 - 1])
    extremes = np.array([max(as_s32), min(as_s32)])
    c = Case("block_reduce", "block_reduce.cu", "block_reduce", "5", "256",
             "shared-memory tree reduction (static __shared__, __syncthreads) over 1200 elements in 5 blocks of 256, "
             "then global atomics: f32 add, u32 add/or/xor/and, s32 max/min, ticket counter")
    c.input("x.bin", x, "f32")
    c.input("u.bin", u, "u32")
    c.scalar("u32", n)
    c.output("partial.bin", blocks * 4)
    c.inout("total.bin", np.zeros(1, dtype=np.float32), "f32", "total_out.bin")
    c.inout("counters.bin", counters0, "u32", "counters_out.bin")
    c.inout("extremes.bin", extremes0, "s32", "extremes_out.bin")
    c.output("seen.bin", n * 4)
    c.compare("partial.bin", partial, "f32", "exact",
              "the tree sdata[t] += sdata[t + s], s = 128..1, replayed in float32 (same order as the kernel)")
    c.compare("total_out.bin", np.array([total]), "f32", {"abs": total_tol},
              "5 atomicAdd(f32) of the block sums in an unspecified order: |error| <= gamma_4 * sum|partial| "
              "(4 roundings of u = 2^-24), against the float64 sum of the exact block sums",
              expected_dtype="f64")
    c.compare("counters_out.bin", counters, "u32", "exact",
              "[sum u mod 2^32, count, tickets drawn, OR of 1<<(u&31), XOR, AND of (u|1<<28)]: order-independent")
    c.compare("extremes_out.bin", extremes, "s32", "exact", "atomicMax/atomicMin of (int)u from INT_MIN/INT_MAX")
    c.compare("seen.bin", np.ones(n, dtype=np.uint64), "u32", "exact",
              "atomicAdd returns the old value: the tickets are 0..n-1, each drawn exactly once")
    return [c]


def case_matmul(ptx):
    body = entry_body(ptx, "matmul_tiled")
    ops = f32_instructions(body)
    assert ops and set(ops) == {"fma.rn.f32"} and len(ops) == 16, ops
    rng = rng_for("matmul_tiled")
    M, N, K, T = 37, 29, 45, 16
    A = rng.uniform(-1, 1, (M, K)).astype(np.float32)
    B = rng.uniform(-1, 1, (K, N)).astype(np.float32)
    C = np.zeros((M, N), dtype=np.float32)
    kt = (K + T - 1) // T
    for i in range(M):
        for j in range(N):
            acc = np.float32(0.0)
            for kk in range(kt * T):
                a = A[i, kk] if kk < K else np.float32(0.0)
                b = B[kk, j] if kk < K else np.float32(0.0)
                acc = fma32(a, b, acc)
            C[i, j] = acc
    ref = A.astype(np.float64) @ B.astype(np.float64)
    assert np.max(np.abs(ref - C)) < 1e-4
    c = Case("matmul_tiled", "matmul_tiled.cu", "matmul_tiled", "2,3", "16,16",
             "C = A B with 16x16 tiles in dynamic shared memory (--smem 2048), M, N, K = 37, 29, 45 (partial tiles "
             "zero-padded), grid 2x3 of 16x16 blocks", smem=2 * T * T * 4)
    c.input("A.bin", A, "f32")
    c.input("B.bin", B, "f32")
    c.output("C.bin", M * N * 4)
    c.scalar("s32", M)
    c.scalar("s32", N)
    c.scalar("s32", K)
    c.compare("C.bin", C.reshape(-1), "f32", "exact",
              "each thread's acc = fma.rn.f32(As[ty][k], Bs[k][tx], acc) for k = 0..47 in order (the PTX's 16 "
              "unrolled fma.rn.f32 and nothing else, asserted), replayed exactly with one rounding per fma")
    return [c]


def case_transpose(ptx):
    rng = rng_for("transpose")
    rows, cols = 70, 45
    bits = rng.integers(0, 2**32, rows * cols, dtype=np.uint64).astype(np.uint32)
    bits[:6] = [0x7FC00000, 0x7F800001, 0xFFBADBAD, 0x80000000, 0x00000001, 0x7F800000]  # NaNs, -0, denormal, inf
    m = bits.reshape(rows, cols)
    c = Case("transpose", "transpose.cu", "transpose", "2,3", "32,8",
             "transpose of a 70x45 f32 matrix through a 32x33 padded shared tile, 2-D grid 2x3 of 32x8 blocks")
    c.input("in.bin", bits, "u32")
    c.output("out.bin", rows * cols * 4)
    c.scalar("s32", rows)
    c.scalar("s32", cols)
    c.compare("out.bin", m.T.reshape(-1), "u32", "exact",
              "ld/st of .f32 move bits: random patterns, signalling and quiet NaNs with payloads included, come "
              "through unchanged")
    return [c]


def case_thread_ids(ptx):
    grid, block = (2, 3, 2), (8, 2, 3)
    tpb = block[0] * block[1] * block[2]
    rows = []
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                for tz in range(block[2]):
                    for ty in range(block[1]):
                        for tx in range(block[0]):
                            tlin = tx + block[0] * (ty + block[1] * tz)
                            base = tlin & ~31
                            active = min(32, tpb - base)
                            mask = 0xFFFFFFFF if active == 32 else (1 << active) - 1
                            rows.append([tx, ty, tz, bx, by, bz, *block, *grid, tlin % 32, base, active, mask])
    total = len(rows)
    c = Case("thread_ids", "thread_ids.cu", "thread_ids", "2,3,2", "8,2,3",
             "special registers of a 3-D grid (2,3,2) of 3-D blocks (8,2,3) = 48 threads: one full warp and one "
             "of 16; %laneid, shfl.idx/ballot/activemask within each warp")
    c.output("out.bin", total * 16 * 4)
    # rows are in (block linear id, thread linear id) order, which is how the kernel indexes `out`
    c.compare("out.bin", np.array(rows, dtype=np.uint64).reshape(-1), "u32", "exact",
              "linear thread id = x + y*Dx + z*Dx*Dy; warps are consecutive runs of 32 linear ids (CUDA Programming "
              "Guide, SIMT architecture), %laneid = linear id mod 32; the second warp of each block has 16 threads")
    return [c]


def bf16_round_array(v):
    return np.array([f32_to_bf16_bits(np.float32(t)) for t in v.reshape(-1)], dtype=np.uint32).reshape(v.shape)


def bf16_to_f64(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32).astype(np.float64)


def mma_tolerance(A, B, C):
    """The PTX ISA leaves the order and internal precision of the tensor-core accumulation to the
    implementation (measured hardware truncates rather than rounds). An f32 accumulator that
    rounds or truncates once per addition is off by at most (K + 1) * 2^-23 * (sum |a b| + |c|)."""
    K = A.shape[1]
    S = np.abs(A) @ np.abs(B) + np.abs(C)
    return float((K + 1) * 2.0**-23 * S.max())


def mma_case(name, kind, M, N, K, grid, block, values, exact, rng):
    a_bits, A = values(rng, (M, K))
    b_bits, B = values(rng, (K, N))
    if exact:
        Cm = (rng.integers(-64, 65, (M, N)) / 4.0).astype(np.float32)
    else:
        Cm = rng.uniform(-1, 1, (M, N)).astype(np.float32)
    D = A @ B + Cm.astype(np.float64)
    if exact:
        assert np.all(D.astype(np.float32).astype(np.float64) == D)
        tol = "exact"
        why = ("all products are multiples of a power of two and every partial sum stays below 2^14 of that "
               "quantum, so any summation order and any accumulator of >= 14 bits gives the exact result")
    else:
        tol = {"abs": mma_tolerance(A, B, Cm.astype(np.float64))}
        why = ("PTX leaves the accumulation order/precision of mma to the implementation: |error| <= (K+1) * 2^-23 * "
               "max(sum|a b| + |c|) against the float64 product of the exact inputs")
    esize = 2 if kind == "bf16" else 1
    c = Case(name, f"mma_{kind}.cu", f"mma_{kind}_gemm", grid, block,
             f"D = A B + C with mma.sync m16n8k{16 if kind == 'bf16' else 32} {kind} -> f32, M x N x K = {M} x {N} x "
             f"{K}, {int(grid) * int(block) // 32} warps, fragments loaded from row-major A (M x K) and B (K x N)")
    c.input("A.bin", a_bits, "bf16" if kind == "bf16" else "e4m3")
    c.input("B.bin", b_bits, "bf16" if kind == "bf16" else "e4m3")
    c.input("C.bin", Cm, "f32")
    c.output("D.bin", M * N * 4)
    c.scalar("s32", M)
    c.scalar("s32", N)
    c.scalar("s32", K)
    assert len(c.files["A.bin"]) == M * K * esize
    if exact:
        c.compare("D.bin", D.astype(np.float32).reshape(-1), "f32", tol, why)
    else:
        c.compare("D.bin", D.reshape(-1), "f32", tol, why, expected_dtype="f64")
    return c


def bf16_random(rng, shape):
    bits = bf16_round_array(rng.standard_normal(shape).astype(np.float32))
    return bits, bf16_to_f64(bits)


def bf16_dyadic(rng, shape):
    vals = (rng.integers(-16, 17, shape) / 8.0).astype(np.float32)
    bits = bf16_round_array(vals)
    assert np.all(bf16_to_f64(bits) == vals)
    return bits, vals.astype(np.float64)


def e4m3_values(bits):
    return np.array([float(decode(int(b), E4M3)) for b in bits.reshape(-1)]).reshape(bits.shape)


def e4m3_dyadic(rng, shape):
    vals = rng.integers(-16, 17, shape) / 2.0
    bits = np.array([encode(abs(Fraction(v)), v < 0, E4M3) for v in vals.reshape(-1)], dtype=np.uint8).reshape(shape)
    assert np.all(e4m3_values(bits) == vals)
    return bits, vals


def e4m3_random(rng, shape):
    # normal numbers only (exponent field 3..10: magnitudes 2^-4 .. 15), random sign and mantissa
    ef = rng.integers(3, 11, shape)
    m = rng.integers(0, 8, shape)
    s = rng.integers(0, 2, shape)
    bits = ((s << 7) | (ef << 3) | m).astype(np.uint8)
    return bits, e4m3_values(bits)


def cases_mma_bf16(ptx):
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in ptx
    return [
        mma_case("mma_bf16_tile", "bf16", 16, 8, 16, "1", "32", bf16_random, False, rng_for("mma_bf16_tile")),
        mma_case("mma_bf16_gemm", "bf16", 32, 16, 32, "2", "64", bf16_random, False, rng_for("mma_bf16_gemm")),
        mma_case("mma_bf16_exact", "bf16", 32, 16, 32, "2", "64", bf16_dyadic, True, rng_for("mma_bf16_exact")),
    ]


def cases_mma_e4m3(ptx):
    assert "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32" in ptx
    return [
        mma_case("mma_e4m3_exact", "e4m3", 16, 8, 32, "1", "32", e4m3_dyadic, True, rng_for("mma_e4m3_exact")),
        mma_case("mma_e4m3_gemm", "e4m3", 32, 16, 64, "1", "128", e4m3_random, False, rng_for("mma_e4m3_gemm")),
    ]


def case_cvt_pack(ptx):
    rng = rng_for("cvt_pack")
    nan, inf = np.float32("nan"), np.float32("inf")
    neg_nan = f32_from_bits(0xFFC00001)
    f32max = np.finfo(np.float32).max
    bf_tie_down = f32_from_bits(0x3F808000)  # 1 + 2^-8: tie between 1 and 1 + 2^-7 -> 1 (even)
    bf_tie_up = f32_from_bits(0x3F818000)  # 1 + 3*2^-8: tie -> 1 + 2^-6 (even)
    bf_above = f32_from_bits(0x3F808001)  # just above the tie -> 1 + 2^-7
    specials = [
        1.0, -2.5, 1000.0, -1000.0, 448.0, -448.0, 449.0, 464.0, 465.0, 480.0, 500.0, inf, -inf, nan, neg_nan,
        0.0, -0.0, 1e-40, -1e-40, f32_from_bits(1), f32_from_bits(0x807FFFFF), bf_tie_down, bf_tie_up, bf_above,
        1.0625, 1.1875, -1.0625, 1.0625001, 2.0**-10, 3 * 2.0**-10, 2.0**-9, 7 * 2.0**-9, 2.0**-6, 15 * 2.0**-10,
        -(2.0**-10), 2.0**-11, 0.001, -0.3, 240.0, 248.0, 232.0, f32max, -f32max, f32_from_bits(0x7F7F8000),
        f32_from_bits(0x7F7F7FFF), 3.0e38, 1e-3, 0.0009765625, 17.0, 19.0,
    ]
    specials = np.array(specials, dtype=np.float32)
    specials.view(np.uint32)[14] = 0xFFC00001  # keep the payload of the negative NaN bit-exact
    ns = len(specials)
    n = 160
    a = np.zeros(n, dtype=np.float32)
    b = np.zeros(n, dtype=np.float32)
    a[:ns] = specials
    b[:ns] = specials[::-1]  # every special appears in both halves
    k = n - ns
    mags = np.exp2(rng.uniform(-14, 11, (2, k)))
    signs = np.where(rng.random((2, k)) < 0.5, -1.0, 1.0)
    a[ns:], b[ns:] = (signs[0] * mags[0]).astype(np.float32), (signs[1] * mags[1]).astype(np.float32)
    a[ns + 60:] = rng.integers(0, 2**32, n - ns - 60, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bf = np.zeros(2 * n, dtype=np.uint32)
    e4 = np.zeros(2 * n, dtype=np.uint32)
    f16 = np.zeros(2 * n, dtype=np.uint32)
    for i in range(n):
        bf[2 * i], bf[2 * i + 1] = f32_to_bf16_bits(b[i]), f32_to_bf16_bits(a[i])  # low half = b, high half = a
        e4[2 * i], e4[2 * i + 1] = f32_to_e4m3_satfinite_bits(b[i]), f32_to_e4m3_satfinite_bits(a[i])
        f16[2 * i], f16[2 * i + 1] = e4m3_to_f16_bits(int(e4[2 * i])), e4m3_to_f16_bits(int(e4[2 * i + 1]))
    assert f32_to_e4m3_satfinite_bits(np.float32(3 * 2.0**-10)) == 0x02  # tie -> even subnormal 2^-8
    assert f32_to_e4m3_satfinite_bits(np.float32(2.0**-10)) == 0x00  # tie -> +0
    assert f32_to_e4m3_satfinite_bits(np.float32(1.1875)) == 0x3A  # tie -> 1.25
    assert f32_to_bf16_bits(f32max) == 0x7F80 and f32_to_bf16_bits(bf_tie_up) == 0x3F82
    c = Case("cvt_pack", "cvt_pack.cu", "cvt_pack", "2", "128",
             "cvt.rn.bf16x2.f32, cvt.rn.satfinite.e4m3x2.f32 and cvt.rn.f16x2.e4m3x2 on 160 pairs (2 blocks of 128): "
             "ties, subnormals, +-1000 and other saturating values, +-inf, NaN, -0, random values and random bits")
    c.input("a.bin", a, "f32")
    c.input("b.bin", b, "f32")
    c.scalar("u32", n)
    c.output("bf16x2.bin", n * 4)
    c.output("e4m3x2.bin", n * 2)
    c.output("f16x2.bin", n * 4)
    c.compare("bf16x2.bin", bf, "bf16", "exact",
              "PTX ISA cvt: for .bf16x2 'the value converted from input a is stored in the upper half of d and "
              "the value converted from input b is stored in the lower half' (bf16 element 2i = b[i], 2i+1 = a[i]); "
              ".rn rounds to nearest even, overflow goes to inf (no .satfinite), subnormals are kept")
    c.compare("e4m3x2.bin", e4, "e4m3", "exact",
              "PTX ISA cvt: for .e4m3x2 'the value converted from input a is stored in the upper 8 bits of d and "
              "the value converted from input b is stored in the lower 8 bits'; .satfinite: NaN -> NaN, |x| > "
              "MAX_NORM (448, also inf) -> sign-preserved MAX_NORM; otherwise round to nearest even incl. "
              "e4m3 subnormals (quantum 2^-9)")
    c.compare("f16x2.bin", f16, "f16", "exact",
              "cvt.rn.f16x2.e4m3x2: the upper 8 bits of a go to the upper 16 bits of d; e4m3 -> f16 is exact")
    return [c]


def case_oob(ptx):
    lines = ptx.split("\n")
    body_store = entry_body(ptx, "oob_store")
    body_load = entry_body(ptx, "oob_load")

    def line_of(body, pattern):
        start = ptx.index(body)
        base = ptx[:start].count("\n")
        hits = [i for i, l in enumerate(body.split("\n")) if re.search(pattern, l)]
        assert len(hits) == 1, (pattern, hits)
        line = base + hits[0] + 1
        assert re.search(pattern, lines[line - 1])
        return line

    store_line = line_of(body_store, r"^\s*st\.global\.f32")
    load_line = line_of(body_load, r"^\s*ld\.global(\.nc)?\.f32")
    n = 40
    s = Case("oob_store", "oob.cu", "oob_store", "1", "64",
             "expect_failure: `if (i <= n) out[i] = i` with out of n = 40 floats: thread 40 stores 4 bytes past "
             "the end of its out: buffer")
    s.output("out.bin", n * 4)
    s.scalar("u32", n)
    s.expect_failure(store_line, f"the out-of-bounds st.global.f32 is on line {store_line} of kernel.ptx (1-based)")
    ld = Case("oob_load", "oob.cu", "oob_load", "1", "64",
              "expect_failure: `out[i] = in[i + 1]` for i < n = 40 with in of 40 floats: thread 39 loads 4 bytes "
              "past the end of its in: buffer")
    ld.input("in.bin", np.arange(n, dtype=np.float32), "f32")
    ld.output("out.bin", n * 4)
    ld.scalar("u32", n)
    ld.expect_failure(load_line, f"the out-of-bounds ld.global.f32 is on line {load_line} of kernel.ptx (1-based)")
    return [s, ld]


BUILDERS = [
    ("saxpy.cu", case_saxpy),
    ("int_ops.cu", case_int_ops),
    ("transcendental.cu", case_transcendental),
    ("f64_ops.cu", case_f64_ops),
    ("warp_reduce.cu", case_warp_reduce),
    ("block_reduce.cu", case_block_reduce),
    ("matmul_tiled.cu", case_matmul),
    ("transpose.cu", case_transpose),
    ("thread_ids.cu", case_thread_ids),
    ("mma_bf16.cu", cases_mma_bf16),
    ("mma_e4m3.cu", cases_mma_e4m3),
    ("cvt_pack.cu", case_cvt_pack),
    ("oob.cu", case_oob),
]


def generate(root: Path):
    nvrtc = Nvrtc()
    print(f"NVRTC {nvrtc.version[0]}.{nvrtc.version[1]}, options {' '.join(NVRTC_OPTIONS)}")
    cross_check_converters()
    used = {src for src, _ in BUILDERS}
    on_disk = {p.name for p in KERNELS.glob("*.cu")}
    assert used == on_disk, f"kernels without a case or cases without a kernel: {used ^ on_disk}"
    for src, builder in BUILDERS:
        ptx = nvrtc.compile(KERNELS / src)
        ptxas_check(ptx, src)
        for case in builder(ptx):
            case.write(root, ptx)
            size = sum(len(v) for v in case.files.values()) + len(ptx)
            print(f"  {case.name:16s} {size / 1024:6.1f} KiB  {len(case.args)} args, {len(case.outputs)} outputs")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate into a scratch folder and compare")
    ap.add_argument("--out", type=Path, default=HERE / "fixtures")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fixtures"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            diff = compare_trees(fresh, args.out)
            if diff:
                print("fixtures differ from a fresh run:\n  " + "\n  ".join(diff))
                sys.exit(1)
            print("fixtures are up to date")
            return
        if args.out.exists():
            shutil.rmtree(args.out)
        shutil.copytree(fresh, args.out)
        print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def compare_trees(a: Path, b: Path):
    fa = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b) for p in b.rglob("*") if p.is_file()} if b.exists() else set()
    out = [f"only in a fresh run: {p}" for p in sorted(fa - fb)] + [f"stale: {p}" for p in sorted(fb - fa)]
    out += [f"differs: {p}" for p in sorted(fa & fb) if (a / p).read_bytes() != (b / p).read_bytes()]
    return out


if __name__ == "__main__":
    main()
