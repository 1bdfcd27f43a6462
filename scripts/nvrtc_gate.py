"""The NVRTC gate's checker: `dsv3c compile SPEC --ptx` and `dsv3c compile SPEC --decode --ptx` for each spec,
`ptxas -v` on every PTX, a table of registers / shared memory / spills per kernel entry, and a non-zero exit on any compile error, any spill, or
any entry whose static shared memory (ptxas's figure) differs from the launch table's (`kernels.json`,
computed in Rust), or which with its dynamic shared memory exceeds sm_90's 227 KB a block.
With --markdown the table is a Markdown report (machine, wheel versions, command, summary, every kernel
entry) on stdout, progress on stderr: what bench/results/ keeps verbatim."""

import argparse
import concurrent.futures as cf
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile

MAX_SMEM_PER_BLOCK = 227 * 1024
FUNC = re.compile(r"Function properties for (\w+)")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:, used \d+ barriers)?(?:, \d+ bytes cumulative stack size)?(?:, (\d+) bytes smem)?")


def ptxas(ptxas_bin, arch, path):
    p = subprocess.run([ptxas_bin, f"-arch={arch}", "-v", "--warn-on-spills", path, "-o", os.devnull],
                       capture_output=True, text=True)
    out = p.stdout + p.stderr
    rows, fn, frame = [], None, (0, 0, 0)
    for line in out.splitlines():
        if m := FUNC.search(line):
            fn = m.group(1)
        elif m := FRAME.search(line):
            frame = tuple(int(x) for x in m.groups())
        elif (m := USED.search(line)) and fn:
            rows.append((fn, int(m.group(1)), int(m.group(2) or 0), *frame))
            fn, frame = None, (0, 0, 0)
    errors = [l for l in out.splitlines() if "error" in l.lower() or "warning" in l.lower()]
    return p.returncode, rows, errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsv3c", required=True)
    ap.add_argument("--ptxas", required=True)
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown report (progress on stderr)")
    ap.add_argument("specs", nargs="+")
    a = ap.parse_args()
    log = sys.stderr if a.markdown else sys.stdout
    failures, table, seen = [], [], set()
    with tempfile.TemporaryDirectory() as tmp:
        # Each spec's training program, then its decode programs (prefill, decode steps over bf16 and FP8
        # latent caches, the MTP verify step).
        for spec, mode in [(s, m) for s in a.specs for m in ("train", "decode")]:
            name = os.path.splitext(os.path.basename(spec))[0]
            out = os.path.join(tmp, f"{name}-{mode}")
            extra = ["--decode"] if mode == "decode" else []
            p = subprocess.run([a.dsv3c, "compile", spec, "--out", out, "--ptx", "--arch", a.arch, *extra],
                               capture_output=True, text=True)
            print(p.stdout.strip() or p.stderr.strip(), file=log)
            if p.returncode != 0:
                failures.append(f"{spec}: dsv3c compile failed:\n{p.stderr}")
                continue
            kdir = os.path.join(out, "kernels")
            ptx = sorted(f for f in os.listdir(kdir) if f.endswith(".ptx"))
            cu = [f for f in os.listdir(kdir) if f.endswith(".cu")]
            if len(ptx) != len(cu) or not ptx:
                failures.append(f"{spec}: {len(cu)} kernels but {len(ptx)} PTX files")
            # The launch table: each file's entries with the shared memory the launcher will use.
            with open(os.path.join(kdir, "kernels.json")) as fh:
                launch = {k["file"][:-3]: {e["name"]: e for e in k["entries"]} for k in json.load(fh)["kernels"]}
            with cf.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                results = list(pool.map(lambda f: (f, ptxas(a.ptxas, a.arch, os.path.join(kdir, f))), ptx))
            for f, (rc, rows, errors) in results:
                if rc != 0 or errors:
                    failures.append(f"{spec}: {f}: ptxas exit {rc}: " + "; ".join(errors[:5]))
                if not rows:
                    failures.append(f"{spec}: {f}: ptxas reported no entry points")
                entries = launch.get(f[:-4], {})
                if rows and set(entries) != {r[0] for r in rows}:
                    failures.append(f"{spec}: {f}: entries {sorted(r[0] for r in rows)} but the launch table has "
                                    f"{sorted(entries)}")
                for fn, regs, smem, stack, st, ld in rows:
                    if st or ld:
                        failures.append(f"{spec}: {f}: {fn} spills ({st} B stores, {ld} B loads)")
                    if e := entries.get(fn):
                        if smem != e["static_smem"]:
                            failures.append(f"{spec}: {f}: {fn} declares {smem} B of static shared memory, the launch "
                                            f"table says {e['static_smem']}")
                        if smem + e["dynamic_smem"] > MAX_SMEM_PER_BLOCK:
                            failures.append(f"{spec}: {f}: {fn} needs {smem} + {e['dynamic_smem']} B of shared memory "
                                            f"(sm_90: {MAX_SMEM_PER_BLOCK} a block)")
                    key = (f, fn)
                    if key not in seen:
                        seen.add(key)
                        table.append((name, f[:-4], fn, regs, smem, stack, st + ld))
    regs = max((r[3] for r in table), default=0)
    summary = (f"nvrtc gate ({a.arch}): {len(a.specs)} specs, {len({r[1] for r in table})} kernels, {len(table)} entries, "
               f"max {regs} registers, {sum(r[6] for r in table)} spill bytes, {len(failures)} failures")
    if a.markdown:
        here = os.path.dirname(os.path.abspath(__file__))
        machine = subprocess.run(["bash", os.path.join(here, "..", "bench", "machine.sh")], capture_output=True, text=True)
        wheels = ", ".join(f"`{w}` {importlib.metadata.version(w)}" for w in
                           ["nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12"])
        print(f"# NVRTC gate: every generated kernel compiled for {a.arch} and assembled by ptxas\n")
        print(machine.stdout.rstrip())
        print(f"- wheels (PyPI): {wheels}")
        print(f"- command: `bash scripts/nvrtc-gate.sh --markdown` (= `dsv3c compile SPEC [--decode] --ptx --arch {a.arch}` for "
              f"{' '.join(a.specs)}, then `ptxas -arch={a.arch} -v --warn-on-spills` on every PTX)\n")
        print(f"**{summary}.** Compile-time facts, not speed; shared memory is ptxas's static figure (attention "
              "kernels also take dynamic shared memory at launch).\n")
        print("| spec | kernel | entry | registers | static smem B | stack B | spill B |")
        print("|---|---|---|---:|---:|---:|---:|")
        for r in table:
            print(f"| {r[0]} | `{r[1]}` | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]} |")
    else:
        w = max(len(r[1]) for r in table) if table else 10
        print(f"\n{'spec':<14} {'kernel':<{w}} {'entry':<22} {'regs':>5} {'smem B':>7} {'stack':>5} {'spill':>5}")
        for r in table:
            print(f"{r[0]:<14} {r[1]:<{w}} {r[2]:<22} {r[3]:>5} {r[4]:>7} {r[5]:>5} {r[6]:>5}")
        print(f"\n{summary}")
    if failures:
        print("\nFAILED:\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
