"""cc_proto_grpc_library: C++ protobuf + gRPC code from the system protoc.

Bazel's proto_library and cc_grpc_library need downloaded repositories; this
macro runs Debian's protoc and grpc_cpp_plugin in a genrule instead.
"""

def cc_proto_grpc_library(name, src, grpc = True, deps = [], visibility = None):
    base = src[:-len(".proto")]
    outs = [base + ".pb.h", base + ".pb.cc"]
    plugin = ""
    if grpc:
        outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
        plugin = " --plugin=protoc-gen-grpc=$$(which grpc_cpp_plugin) --grpc_out=$(BINDIR)"
    native.genrule(
        name = name + "_codegen",
        srcs = [src],
        outs = outs,
        cmd = "protoc -I. --cpp_out=$(BINDIR)" + plugin + " $(location %s)" % src,
    )
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["@system//:grpc" if grpc else "@system//:protobuf"],
        visibility = visibility,
    )
