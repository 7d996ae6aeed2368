"""cuda_library: compiles .cu files with nvcc from /usr/local/cuda.

The result is a cc_library tagged manual, so the default `bazel build //...`
never runs nvcc; consumers pick it with select() on //:cuda_enabled, which
`--config=cuda` turns on.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

def cuda_library(name, srcs, hdrs = [], deps = [], visibility = None, copts = []):
    native.genrule(
        name = name + "_nvcc",
        srcs = srcs + hdrs,
        outs = ["lib" + name + "_cuda.a"],
        cmd = (NVCC + " -O3 -std=c++17 -Xcompiler -fPIC -I. -I$(GENDIR)" +
               " -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90" +
               " " + " ".join(copts) +
               " -lib -o $@ " + " ".join(["$(location %s)" % s for s in srcs])),
        tags = ["manual"],
    )
    native.cc_library(
        name = name,
        srcs = [":" + name + "_nvcc"],
        hdrs = hdrs,
        deps = deps,
        linkopts = ["-L/usr/local/cuda/lib64", "-Wl,-rpath,/usr/local/cuda/lib64", "-lcudart", "-lcublas"],
        tags = ["manual"],
        visibility = visibility,
        alwayslink = True,
    )
