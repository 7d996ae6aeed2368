"""cuda_emulated_library: .cu sources compiled as host C++ on the CUDA grid emulator.

Each .cu file goes through kernels/testing/cu_to_host.py (a genrule: the
<<<...>>> launches and __shared__ declarations rewritten, nothing else), and
the results are compiled by the host compiler against //kernels/testing:emulator,
whose include/ directory stands in for <cuda_runtime.h>, <cublas_v2.h> and
CUB. The kernel sources stay as they are, so `--config=cuda` keeps building
them with nvcc (cuda.bzl). See kernels/testing/README.md.

With sanitize = True everything the library compiles, and the emulator it
links, carries AddressSanitizer and UBSan (SANITIZE_COPTS); a cc_test on it
must use SANITIZE_COPTS and SANITIZE_LINKOPTS too.
"""

CU_TO_HOST = "//kernels/testing:cu_to_host.py"

# -fno-sanitize-recover: a UBSan finding fails the test instead of only
# printing a line.
SANITIZE_COPTS = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    "-g",
]
SANITIZE_LINKOPTS = ["-fsanitize=address,undefined"]

def cuda_host_sources(name, srcs):
    """One genrule per .cu file; returns the generated .cc labels."""
    outs = []
    for src in srcs:
        out = "%s/%s.cc" % (name, src)
        native.genrule(
            name = "%s_%s" % (name, src.replace("/", "_").replace(".", "_")),
            srcs = [src],
            outs = [out],
            tools = [CU_TO_HOST],
            # Debian's python3 (the only interpreter the sandbox is sure to have).
            cmd = "/usr/bin/python3 $(location %s) $< $@" % CU_TO_HOST,
        )
        outs.append(out)
    return outs

def cuda_emulated_library(name, srcs, hdrs = [], deps = [], sanitize = False, visibility = None):
    """A cc_library of `srcs` (.cu) on the emulator, in place of cuda_library."""
    native.cc_library(
        name = name,
        srcs = cuda_host_sources(name + "_host", srcs),
        hdrs = hdrs,
        # nvcc does not warn on `threadIdx.x < int`; g++ -Wall would, on
        # every such kernel line.
        copts = ["-Wno-sign-compare"] + (SANITIZE_COPTS if sanitize else []),
        linkopts = SANITIZE_LINKOPTS if sanitize else [],
        deps = deps + [
            "//kernels/testing:emulator_asan" if sanitize else "//kernels/testing:emulator",
        ],
        alwayslink = True,
        visibility = visibility,
    )
