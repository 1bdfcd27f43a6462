"""NVRTC through ctypes, and ptxas, from the CUDA wheels that scripts/nvrtc-gate.sh installs into
target/cuda-wheels: what the fixture scripts (make_fixtures.py, broken/make.py) compile CUDA with."""

import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
NVRTC_OPTIONS = ["--gpu-architecture=sm_90a", "-std=c++17"]


def nvidia_dir():
    for p in sorted((ROOT / "target" / "cuda-wheels").glob("lib/python3*/site-packages/nvidia")):
        return p
    try:
        import nvidia  # noqa: F401

        return Path(list(nvidia.__path__)[0])
    except ImportError:
        sys.exit("no CUDA wheels (run scripts/nvrtc-gate.sh once to install them)")


class Nvrtc:
    def __init__(self):
        self.lib = ctypes.CDLL(str(nvidia_dir() / "cuda_nvrtc" / "lib" / "libnvrtc.so.12"))
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = (major.value, minor.value)

    def check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def compile(self, path: Path, extra=()) -> str:
        """PTX of the CUDA file `path`, with NVRTC_OPTIONS plus `extra` (e.g. ["-DFIXED"])."""
        prog = ctypes.c_void_p()
        self.check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), path.read_bytes(), path.name.encode(), 0,
                                               None, None), "create")
        try:
            opts = [o.encode() for o in NVRTC_OPTIONS + list(extra)]
            rc = self.lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            size = ctypes.c_size_t()
            self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            self.lib.nvrtcGetProgramLog(prog, log)
            if rc != 0:
                raise RuntimeError(f"{path.name} {list(extra)} does not compile:\n{log.value.decode()}")
            self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            ptx = ctypes.create_string_buffer(size.value)
            self.check(self.lib.nvrtcGetPTX(prog, ptx), "get ptx")
            return ptx.value.decode()
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def ptxas_check(ptx: str, name: str):
    """Assembles with the wheel's ptxas for sm_90a when present: catches a bad inline-asm operand early."""
    ptxas = nvidia_dir() / "cuda_nvcc" / "bin" / "ptxas"
    if not ptxas.exists():
        return
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / f"{name}.ptx"
        src.write_text(ptx)
        r = subprocess.run([str(ptxas), "-arch=sm_90a", str(src), "-o", str(Path(d) / "k.cubin")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"ptxas rejects {name}:\n{r.stderr}")
