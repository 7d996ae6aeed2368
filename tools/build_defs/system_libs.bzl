"""Repository rule exposing Debian's system libraries as cc_library targets.

Headers live in /usr/include, which the compiler searches already, so each
target only carries link flags. The flags come from pkg-config at fetch time
(gRPC needs the full Abseil list or the link fails on absl::debian3 symbols).
Nothing is downloaded.
"""

_LIBS = {
    # name: (pkg-config modules, extra linkopts)
    "absl": (["absl_status", "absl_statusor", "absl_strings", "absl_str_format", "absl_synchronization", "absl_flat_hash_map", "absl_time", "absl_random_random", "absl_hash"], []),
    "protobuf": (["protobuf"], ["-lpthread"]),
    "grpc": (["grpc++", "protobuf"], ["-lgrpc++_reflection", "-lpthread"]),
    "rocksdb": ([], ["-lrocksdb"]),
    "glog": (["libglog"], []),
    "gflags": (["gflags"], []),
    "gtest": (["gtest", "gmock"], ["-lpthread"]),
    "gtest_main": (["gtest_main", "gmock"], ["-lpthread"]),
    "benchmark": (["benchmark"], []),
    "openblas": (["openblas"], []),
    "fasttext": ([], ["-lfasttext", "-lpthread"]),
    # prometheus-cpp: metric types and the text format (core). The /metrics
    # HTTP endpoint is our own (base/metrics.cc says why not civetweb).
    "prometheus": (["prometheus-cpp-core"], ["-lpthread"]),
}

def _pkg_config(ctx, modules):
    if not modules:
        return []
    res = ctx.execute(["pkg-config", "--libs"] + modules)
    if res.return_code != 0:
        fail("pkg-config --libs %s failed: %s (run tools/setup.sh)" % (" ".join(modules), res.stderr))
    return [f for f in res.stdout.strip().split(" ") if f]

def _system_libs_impl(ctx):
    lines = ['package(default_visibility = ["//visibility:public"])', ""]
    for name, (modules, extra) in _LIBS.items():
        flags = _pkg_config(ctx, modules) + extra
        lines.append("cc_library(")
        lines.append('    name = "%s",' % name)
        lines.append("    linkopts = %s," % repr(flags))
        lines.append(")")
        lines.append("")
    ctx.file("BUILD.bazel", "\n".join(lines))
    ctx.file("WORKSPACE", 'workspace(name = "%s")\n' % ctx.name)

system_libs = repository_rule(
    implementation = _system_libs_impl,
    local = True,
    environ = ["PKG_CONFIG_PATH"],
)
