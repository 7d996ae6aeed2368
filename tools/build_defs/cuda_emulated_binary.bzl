"""cuda_emulated_binary: a binary rebuilt with the CUDA twins on the grid emulator.

`//kernels:kernels` picks the CUDA twins by configuration: nvcc under
`--config=cuda`, UNIMPLEMENTED stubs by default, and the grid emulator's
host build of the same .cu sources (kernels/testing/README.md) when the
build setting `//kernels:cuda_emulation` is true. This rule builds `binary`
(and everything it links) with that setting on, through a configuration
transition, and exposes the result under its own name. Nothing else
changes, so e.g. `//worker:trainer_cuda_emulated -- --device=cuda` runs the
trainer's whole CUDA path on the CPU. For tests only: the emulator is
orders of magnitude slower than a GPU.
"""

def _bool_flag_impl(ctx):
    return []

# A boolean build setting (flag); read by config_setting(flag_values = ...).
bool_flag = rule(
    implementation = _bool_flag_impl,
    build_setting = config.bool(flag = True),
)

def _emulation_transition_impl(settings, attr):
    return {"//kernels:cuda_emulation": True}

_emulation_transition = transition(
    implementation = _emulation_transition_impl,
    inputs = [],
    outputs = ["//kernels:cuda_emulation"],
)

def _emulation_asan_transition_impl(settings, attr):
    return {
        "//kernels:cuda_emulation": True,
        "//kernels:cuda_emulation_asan": True,
    }

# The same with the emulator and the CUDA twins under ASan + UBSan
# (:cuda_emulated_asan): an out-of-bounds access to device memory is then a
# heap overflow in the kernel's frame.
_emulation_asan_transition = transition(
    implementation = _emulation_asan_transition_impl,
    inputs = [],
    outputs = ["//kernels:cuda_emulation", "//kernels:cuda_emulation_asan"],
)

def _cuda_emulated_binary_impl(ctx):
    info = ctx.attr.binary[0][DefaultInfo]
    exe = info.files_to_run.executable
    out = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.run_shell(
        inputs = [exe],
        outputs = [out],
        command = "cp -f '%s' '%s' && chmod +x '%s'" % (exe.path, out.path, out.path),
        mnemonic = "CopyEmulatedBinary",
    )
    runfiles = ctx.runfiles(files = [out]).merge(info.default_runfiles)
    return [DefaultInfo(executable = out, files = depset([out]), runfiles = runfiles)]

_ATTRS = {
    "binary": attr.label(
        cfg = _emulation_transition,
        executable = True,
        mandatory = True,
    ),
    "_allowlist_function_transition": attr.label(
        default = "@bazel_tools//tools/allowlists/function_transition_allowlist",
    ),
}

cuda_emulated_binary = rule(
    implementation = _cuda_emulated_binary_impl,
    attrs = _ATTRS,
    executable = True,
)

# The same for a test: `binary` is a cc_test (tag it manual so the default
# configuration, where its CUDA twins are stubs, does not run it).
cuda_emulated_test = rule(
    implementation = _cuda_emulated_binary_impl,
    attrs = _ATTRS,
    test = True,
)

# cuda_emulated_test with the emulated kernels under ASan + UBSan.
cuda_emulated_asan_test = rule(
    implementation = _cuda_emulated_binary_impl,
    attrs = dict(_ATTRS, binary = attr.label(
        cfg = _emulation_asan_transition,
        executable = True,
        mandatory = True,
    )),
    test = True,
)
