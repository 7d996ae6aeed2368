#!/usr/bin/env python3
"""Rewrites a .cu file into host C++ for the CUDA grid emulator.

    cu_to_host.py IN.cu OUT.cc

Two rewrites, everything else is kept byte for byte (a #line directive
keeps compiler messages and sanitizer reports pointing at IN.cu):

  name<<<grid, block[, smem[, stream]]>>>(args)
      -> ::cuda_emu::LaunchKernel("name", name,
             ::cuda_emu::LaunchConfig(grid, block[, smem[, stream]]), args)
  __shared__ T name[N]...;           (static, per block)
      -> static constexpr ::cuda_emu::SharedDecl mim_emu_shared_name{...};
         auto name = ::cuda_emu::StaticShared<T[N]...>(mim_emu_shared_name);
  extern __shared__ T name[];        (the launch's dynamic shared memory)
      -> ... auto name = ::cuda_emu::DynamicShared<T>(mim_emu_shared_name);

A __shared__ or <<< that does not fit these forms is an error (exit 1,
naming the line) rather than something compiled differently from nvcc.
"""
import re
import sys

LAUNCH = re.compile(
    r"(?P<name>[A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<(?P<cfg>.*?)>>>\s*\(", re.S)
SHARED = re.compile(
    r"(?P<extern>\bextern\s+)?__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?"
    r"(?P<type>[A-Za-z_][\w:\s<>,*]*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*"
    r"(?P<dims>(?:\[[^\]\[;]*\]\s*)*);")


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def rewrite_launches(src, path):
    out, last = [], 0
    for m in LAUNCH.finditer(src):
        name = m.group("name")
        args_start = m.end()
        empty = re.match(r"\s*\)", src[args_start:]) is not None
        # Keep the newlines of the matched text so later lines keep their numbers.
        newlines = src.count("\n", m.start(), m.end()) - m.group("cfg").count("\n")
        out.append(src[last:m.start()])
        out.append('::cuda_emu::LaunchKernel("%s", %s, ::cuda_emu::LaunchConfig(%s)%s%s' %
                   (re.sub(r"\s+", "", name), name, m.group("cfg"), "" if empty else ", ",
                    "\n" * newlines))
        last = args_start
    out.append(src[last:])
    text = "".join(out)
    if "<<<" in strip_comments(text):
        sys.exit("%s:%d: a <<<...>>> launch cu_to_host.py cannot parse" %
                 (path, line_of(text, strip_comments(text).index("<<<"))))
    return text


def rewrite_shared(src, path):
    def repl(m):
        name, dims = m.group("name"), re.sub(r"\s+", "", m.group("dims"))
        ctype = " ".join(m.group("type").split())
        decl = ("static constexpr ::cuda_emu::SharedDecl mim_emu_shared_%s{\"%s\", __FILE__, "
                "__LINE__}; " % (name, name))
        newlines = "\n" * m.group(0).count("\n")
        if m.group("extern"):
            if dims != "[]":
                sys.exit("%s:%d: extern __shared__ '%s' must be declared as T %s[]" %
                         (path, line_of(src, m.start()), name, name))
            return decl + "auto %s = ::cuda_emu::DynamicShared<%s>(mim_emu_shared_%s);%s" % (
                name, ctype, name, newlines)
        if "[]" in dims:
            sys.exit("%s:%d: __shared__ '%s' needs a size (or extern for dynamic memory)" %
                     (path, line_of(src, m.start()), name))
        return decl + "auto %s = ::cuda_emu::StaticShared<%s%s>(mim_emu_shared_%s);%s" % (
            name, ctype, dims, name, newlines)

    text = SHARED.sub(repl, src)
    code = strip_comments(text)
    if "__shared__" in code:
        sys.exit("%s:%d: a __shared__ declaration cu_to_host.py cannot parse (one declarator "
                 "per declaration: [extern] __shared__ T name[N]...;)" %
                 (path, line_of(code, code.index("__shared__"))))
    return text


def strip_comments(src):
    """src with comments and string literals blanked (same length)."""
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', blank, src, flags=re.S)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: cu_to_host.py IN.cu OUT.cc")
    path, out_path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        src = f.read()
    text = rewrite_shared(rewrite_launches(src, path), path)
    with open(out_path, "w") as f:
        f.write('// Generated from %s by kernels/testing/cu_to_host.py; do not edit.\n' % path)
        f.write('#include "kernels/testing/cuda_emu_device.h"\n')
        f.write('#line 1 "%s"\n' % path)
        f.write(text)


if __name__ == "__main__":
    main()
