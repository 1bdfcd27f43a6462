#!/usr/bin/env python3
"""Deliberately broken CUDA kernels, one per check of the `dsv3c sim run` sanitizer, each with a
correct twin: the generator of tests/sim/broken/ (run by tests/sim_sanitizer.rs).

Each NAME.cu here holds one small `extern "C" __global__` kernel whose bug is marked `BUG`; built
with `-DFIXED` it is the correct twin (member_mask_syncwarp.cu has a second twin, `-DFIXED_SPLIT`).
This script compiles each source with NVRTC (`--gpu-architecture=sm_90a -std=c++17`, plus the
twin's define) into NAME.ptx and NAME_ok.ptx (NAME_split_ok.ptx), writes the input files the cases
read, and writes cases.json:

    {"cases": [{"name", "ptx", "entry", "grid", "block", "smem", "args", "check", "lines", "why"}]}

`args` are the kernel arguments in `dsv3c sim run --arg` syntax, in parameter order; an `in:` path
is relative to this folder, and `{tmp}` stands for a scratch folder the test chooses (outputs go
there). `check` is the sanitizer check the broken case must report (out-of-bounds, misaligned, race,
uninitialized, deadlock, divergence, member-mask), null for a twin, which must run clean. `lines`
are the 1-based PTX line numbers of the offending instruction(s); the report must name one of them
(`PTX line N`). Several lines are listed only where the bug is a pair of instructions and either is
a fair place to report it: a race (the write and the read), a deadlock or divergence between two
barriers (both barriers).

How the lines are found: by a regular expression over the lines of the entry's body in the
generated PTX (see LINES below; each search names the opcode, its state space and type, and where
that is not unique an operand or the position after the kernel's only `bar.sync`). Every search must
match exactly the number of lines it expects (1, or 2 for the two barriers of divergence_bar), or
the script fails: if a new NVRTC emits different code the script stops rather than guess. The twin
PTX is checked too (TWIN_CHECKS), that the fix survived compilation (e.g. the +4 offset, the 0xffff
mask, the single barrier).

How to rerun (from the project root; needs the CUDA wheels of scripts/nvrtc-gate.sh, no NumPy):
    target/cuda-wheels/bin/python tests/sim/broken/make.py           # rewrite the generated files
    target/cuda-wheels/bin/python tests/sim/broken/make.py --check   # exit 1 if anything differs
    cargo test --test sim_sanitizer
The output is deterministic for a given NVRTC (the committed files were written by the version
recorded in cases.json). When the wheel has ptxas, every PTX is also assembled for sm_90a as a check
of the inline asm.
"""

import argparse
import json
import re
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
from nvrtc_tools import NVRTC_OPTIONS, Nvrtc, ptxas_check  # noqa: E402

# name (also the entry) -> grid, block, args (twins run with the same ones), the check the broken case
# must report, why it is broken, and optionally twins: case suffix -> NVRTC defines (default
# {"_ok": ["-DFIXED"]}). Every buffer is exactly as large as the kernel is meant to touch.
CASES = {
    "oob_global_store": dict(
        grid="1", block="64", args=["out:128:{tmp}/out.bin", "s32:32"], check="out-of-bounds",
        why="`if (i <= n) out[i] = i` with n = 32 and a 32-float buffer: thread 32 stores at byte 128"),
    "oob_shared_read": dict(
        grid="1", block="32", args=["out:128:{tmp}/out.bin", "s32:1"], check="out-of-bounds",
        why="thread 31 reads s[32] of `__shared__ float s[32]` (the module's only shared variable)"),
    "race_shared": dict(
        grid="1", block="64", args=["out:256:{tmp}/out.bin"], check="race",
        why="each thread writes s[t] and reads s[63 - t], written by the other warp, with no barrier"),
    "uninit_shared": dict(
        grid="1", block="32", args=["out:128:{tmp}/out.bin"], check="uninitialized",
        why="32 threads write s[0..31] of `__shared__ int s[64]` and read s[t + 32], never written"),
    "uninit_register": dict(
        grid="1", block="32", args=["out:128:{tmp}/out.bin"], check="uninitialized",
        why="inline PTX `{ .reg .b32 r; add.u32 %0, r, 1; }`: r is read before anything sets it"),
    "deadlock_spin": dict(
        grid="1", block="64", args=["in:flag_zero.bin", "out:256:{tmp}/out.bin"], check="deadlock",
        why="warp 0 waits at `if (t < 32) __syncthreads()`; warp 1 spins on a flag warp 0 raises only "
            "after the barrier"),
    "deadlock_barrier_id": dict(
        grid="1", block="64", args=["out:256:{tmp}/out.bin"], check="deadlock",
        why="warp 0 waits at bar.sync 0, warp 1 at barrier.sync 1, each barrier expecting all 64 "
            "threads"),
    "divergence_bar": dict(
        grid="1", block="32", args=["out:128:{tmp}/out.bin"], check="divergence",
        why="`if (t & 1) __syncthreads(); else __syncthreads();`: one warp split over two aligned "
            "barriers"),
    "misaligned_load": dict(
        grid="1", block="32", args=["in:floats40.bin", "out:128:{tmp}/out.bin"], check="misaligned",
        why="`*(float*)((char*)(in + t) + 2)`: ld.global.f32 at an address = 2 mod 4"),
    "member_mask_shfl": dict(
        grid="1", block="16", args=["in:floats16.bin", "out:64:{tmp}/out.bin"], check="member-mask",
        why="a 16-thread block calls __shfl_sync(0xffffffff, v, 0): lanes 16..31 do not exist"),
    "member_mask_syncwarp": dict(
        grid="1", block="32", args=["out:128:{tmp}/out.bin"], check="member-mask",
        why="lanes 0..15 call __syncwarp(0xffffffff); lanes 16..31, which it names, skip it and exit",
        twins={"_ok": ["-DFIXED"], "_split_ok": ["-DFIXED_SPLIT"]}),
}

# name -> searches over the broken entry's body: (regex, expected number of matching lines, or
# (regex, count, after) where only lines after the single line matching `after` are searched).
LINES = {
    # the kernel's only global store
    "oob_global_store": [(r"st\.global\.f32\s+\[%rd\d+\], %f\d+;", 1)],
    # the kernel's only shared load (s[t + k])
    "oob_shared_read": [(r"ld\.shared\.f32\s+%f\d+, \[%rd\d+\];", 1)],
    # the write s[t] = t + 1 (the only shared store after the barrier; the one before it zeroes
    # the array) and the read of s[63 - t]
    "race_shared": [(r"st\.shared\.u32\s+\[%rd\d+\], %r\d+;", 1, r"bar\.sync\s+0;"),
                    (r"ld\.shared\.u32\s+%r\d+, \[%rd\d+\];", 1)],
    # the read of s[t + 32]: the kernel's only shared load, at offset +128 from &s[t]
    "uninit_shared": [(r"ld\.shared\.u32\s+%r\d+, \[%rd\d+\+128\];", 1)],
    # the inline asm line with the add that reads r
    "uninit_register": [(r"\{ \.reg \.b32 r; add\.u32 %r\d+, r, 1; \}", 1)],
    # the barrier warp 0 waits at (the kernel's only barrier)
    "deadlock_spin": [(r"bar\.sync\s+0;", 1)],
    # the two barriers: warp 0's bar.sync 0 and warp 1's inline barrier.sync 1
    "deadlock_barrier_id": [(r"bar\.sync\s+0;", 1), (r"barrier\.sync 1;", 1)],
    # the two bar.sync 0 of the two branches (the kernel has exactly these two barriers)
    "divergence_bar": [(r"bar\.sync\s+0;", 2)],
    # the load at [&in[t] + 2] (the kernel's only global load)
    "misaligned_load": [(r"ld\.global\.f32\s+%f\d+, \[%rd\d+\+2\];", 1)],
    # the kernel's only shuffle (its mask operand is a register holding -1)
    "member_mask_shfl": [(r"shfl\.sync\.idx\.b32\s+%r\d+\|%p\d+, %r\d+, %r\d+, %r\d+, %r\d+;", 1)],
    # the kernel's only warp barrier, with the full mask as an immediate
    "member_mask_syncwarp": [(r"bar\.warp\.sync\s+-1;", 1)],
}

# twin case -> (regex, expected count) over the twin's entry body: the fix is in the compiled code.
TWIN_CHECKS = {
    "oob_global_store_ok": [(r"setp\.ge\.s32\s.*", 1), (r"st\.global\.f32\s.*", 1)],
    "oob_shared_read_ok": [(r"and\.b64\s+%rd\d+, %rd\d+, 124;", 1), (r"ld\.shared\.f32\s.*", 1)],
    "race_shared_ok": [(r"bar\.sync\s+0;", 2), (r"ld\.shared\.u32\s.*", 1)],
    "uninit_shared_ok": [(r"st\.shared\.u32\s+\[%rd\d+\+128\], %r\d+;", 1), (r"ld\.shared\.u32\s+%r\d+, \[%rd\d+\+128\];", 1)],
    "uninit_register_ok": [(r"\{ \.reg \.b32 r; mov\.u32 r, 5; add\.u32 %r\d+, r, 1; \}", 1)],
    "deadlock_spin_ok": [(r"bar\.sync\s+0;", 1), (r"atom\.global\.add\.u32\s.*", 1)],
    "deadlock_barrier_id_ok": [(r"barrier\.sync 1;", 2), (r"bar\.sync\s.*", 0)],
    "divergence_bar_ok": [(r"bar\.sync\s+0;", 1)],
    "misaligned_load_ok": [(r"ld\.global\.f32\s+%f\d+, \[%rd\d+\+4\];", 1)],
    "member_mask_shfl_ok": [(r"mov\.u32\s+%r\d+, 65535;", 1), (r"shfl\.sync\.idx\.b32\s.*", 1)],
    "member_mask_syncwarp_ok": [(r"bar\.warp\.sync\s+65535;", 1)],
    # two warp barriers with the full mask, one per branch
    "member_mask_syncwarp_split_ok": [(r"bar\.warp\.sync\s+-1;", 2)],
}


def inputs():
    """The input files: a zeroed flag, and floats 0.5 * i (exact in f32)."""
    return {
        "flag_zero.bin": bytes(4),
        "floats40.bin": struct.pack("<40f", *[0.5 * i for i in range(40)]),
        "floats16.bin": struct.pack("<16f", *[0.5 * i for i in range(16)]),
    }


# ----------------------------------------------------------------------------------------------
# NVRTC through ctypes
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Finding lines
# ----------------------------------------------------------------------------------------------


def entry_lines(ptx: str, entry: str):
    """(1-based line number, text) of every line of the entry's body, from `.entry NAME(` to `}`."""
    lines = ptx.split("\n")
    start = [i for i, l in enumerate(lines) if re.match(r"(?:\.visible\s+)?\.entry\s+" + re.escape(entry) + r"\(", l)]
    assert len(start) == 1, f"{entry}: {len(start)} .entry lines"
    end = next(i for i in range(start[0], len(lines)) if lines[i] == "}")
    return [(i + 1, lines[i]) for i in range(start[0], end + 1)]


def search(body, regex, count, after=None, what=""):
    if after is not None:
        anchor = [n for n, l in body if re.fullmatch(r"\s*" + after + r"\s*", l)]
        assert len(anchor) == 1, f"{what}: {len(anchor)} lines match the anchor {after!r}"
        body = [(n, l) for n, l in body if n > anchor[0]]
    # the instruction, optionally predicated, alone on its line (comments and inline-asm markers
    # are separate lines)
    hits = [n for n, l in body if re.fullmatch(r"\s*(?:@!?%p\d+\s+)?" + regex + r"\s*", l)]
    assert len(hits) == count, f"{what}: {regex!r} matches {len(hits)} lines {hits}, expected {count}"
    return hits


# ----------------------------------------------------------------------------------------------


def generate(out: Path, nvrtc: Nvrtc):
    for name, data in inputs().items():
        (out / name).write_bytes(data)
    cases = []
    for name, c in CASES.items():
        src = HERE / f"{name}.cu"
        variants = [("", None)] + list(c.get("twins", {"_ok": ["-DFIXED"]}).items())
        for suffix, defines in variants:
            fixed = defines is not None
            case = name + suffix
            ptx = nvrtc.compile(src, defines or [])
            ptxas_check(ptx, case)
            (out / f"{case}.ptx").write_text(ptx)
            body = entry_lines(ptx, name)
            if fixed:
                for regex, count in TWIN_CHECKS[case]:
                    search(body, regex, count, what=f"{case} (twin check)")
                lines = []
            else:
                lines = []
                for s in LINES[name]:
                    lines += search(body, *s, what=case)
            cases.append({
                "name": case,
                "source": " ".join([f"{name}.cu"] + (defines or [])),
                "ptx": f"{case}.ptx",
                "entry": name,
                "grid": c["grid"],
                "block": c["block"],
                "smem": 0,
                "args": c["args"],
                "check": None if fixed else c["check"],
                "lines": sorted(lines),
                "why": ("correct twin of " + name) if fixed else c["why"],
            })
    doc = {
        "generator": "tests/sim/broken/make.py (see its docstring)",
        "nvrtc": "%d.%d" % nvrtc.version,
        "nvrtc_options": NVRTC_OPTIONS,
        "cases": cases,
    }
    (out / "cases.json").write_text(json.dumps(doc, indent=2) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate into a scratch folder and compare")
    args = ap.parse_args()
    nvrtc = Nvrtc()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp, nvrtc)
        differ = [p.name for p in sorted(tmp.iterdir())
                  if not (HERE / p.name).exists() or (HERE / p.name).read_bytes() != p.read_bytes()]
        if args.check:
            if differ:
                print("make.py --check: differs:", " ".join(differ))
                sys.exit(1)
            print("make.py --check: all generated files match")
            return
        for p in sorted(tmp.iterdir()):
            (HERE / p.name).write_bytes(p.read_bytes())
        print(f"wrote {len(list(tmp.iterdir()))} files to {HERE.relative_to(ROOT)} (changed: {' '.join(differ) or 'none'})")


if __name__ == "__main__":
    main()
