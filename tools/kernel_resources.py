#!/usr/bin/env python3
"""Compile kernels/*.cu with NVRTC for sm_90 and print ptxas's resource report (registers,
spills, shared memory) per kernel. Needs only NVRTC (no GPU):

    pip install nvidia-cuda-nvrtc-cu12      # or a CUDA toolkit
    python3 tools/kernel_resources.py [gemv.cu ...] [-DNAME=VALUE ...] [--sass DIR]

--sass DIR also writes each file's cubin and, where cuobjdump is found (CUDA toolkit, or
`pip install nvidia-cuda-cuobjdump`), its SASS to DIR/<file>.sass.

Like the library, each file is compiled with kernels/common.cuh prepended.
"""
import ctypes
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_nvrtc():
    cands = []
    for base in [os.environ.get("VIRTUAL_ENV", ""), os.path.join(ROOT, ".dev/nvrtc-venv"), sys.prefix]:
        cands += glob.glob(os.path.join(base, "lib/python3*/site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.*"))
    cands += glob.glob("/usr/local/cuda/lib64/libnvrtc.so.*")
    for c in cands:
        if "builtins" in c or "alt" in c:
            continue
        return ctypes.CDLL(c)
    sys.exit("NVRTC not found (pip install nvidia-cuda-nvrtc-cu12)")


def main():
    nv = find_nvrtc()
    files = [a for a in sys.argv[1:] if not a.startswith("-")] or sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "kernels/*.cu")))
    defs = [a for a in sys.argv[1:] if a.startswith("-D")]
    sass = None
    if "--sass" in sys.argv:
        sass = sys.argv[sys.argv.index("--sass") + 1]
        files = [f for f in files if f != sass]
        os.makedirs(sass, exist_ok=True)
    common = open(os.path.join(ROOT, "kernels/common.cuh")).read()
    for f in files:
        src = common + "\n" + open(os.path.join(ROOT, "kernels", f)).read()
        prog = ctypes.c_void_p()
        assert nv.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), f.encode(), 0, None, None) == 0
        # gemm_q4.cu uses wgmma, which only sm_90a has (as the library compiles it).
        arch = b"sm_90a" if f == "gemm_q4.cu" else b"sm_90"
        opts = [b"--gpu-architecture=" + arch, b"--std=c++17", b"--ptxas-options=-v"] + [d.encode() for d in defs]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = nv.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        nv.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        print(f"== {f} (rc {rc})")
        fn = None
        for line in log.splitlines():
            if "Compiling entry function" in line:
                fn = line.split("'")[1]
            elif "Used" in line or "spill" in line and ("bytes spill" in line and not line.strip().startswith("0 bytes")):
                print(f"  {fn}: {line.split(':', 1)[-1].strip()}")
            elif rc != 0 or "arning" in line or "erformance" in line:
                print(line)
        if sass and rc == 0:
            n = ctypes.c_size_t()
            nv.nvrtcGetCUBINSize(prog, ctypes.byref(n))
            cub = ctypes.create_string_buffer(n.value)
            nv.nvrtcGetCUBIN(prog, cub)
            path = os.path.join(sass, f + ".cubin")
            open(path, "wb").write(cub.raw)
            tools = glob.glob(os.path.join(ROOT, ".dev/nvrtc-venv/lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump"))
            tools += glob.glob("/usr/local/cuda/bin/cuobjdump")
            if tools:
                os.system(f"{tools[0]} -sass {path} > {os.path.join(sass, f + '.sass')}")
        nv.nvrtcDestroyProgram(ctypes.byref(prog))


if __name__ == "__main__":
    main()
