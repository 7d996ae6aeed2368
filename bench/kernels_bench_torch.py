#!/usr/bin/env python3
"""kernels/ ops vs the same ops written in PyTorch, side by side.

For each shape (B=1024, L in {50, 1000}, d in {32, 64}) runs
bench/kernels_bench (C++) and then PyTorch eager, --rounds times in
alternation, and prints one table: median ours/torch times and the median
ratio torch_ms / ours_ms (> 1 means ours is faster) with its range over the
rounds. With --gpu and a CUDA device, does the same on the GPU.

  bazel build -c opt //bench:kernels_bench
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 \
    /usr/bin/python3 bench/kernels_bench_torch.py \
    --bench bazel-bin/bench/kernels_bench --threads 2

LD_PRELOAD pins Debian's torch (which links the generic libblas.so.3) to
OpenBLAS regardless of the update-alternatives setting.
"""
import argparse
import re
import statistics
import subprocess
import time

import torch

B = 1024
K = 20


def best_time(fn, reps, sync):
    fn()
    sync()
    best = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_ops(L, d, dev):
    """Returns {op: (callable, needs_setup)} matching kernels_bench's ops."""
    g = torch.Generator().manual_seed(7)
    lens = torch.randint(L // 2, L + 1, (B,), generator=g).to(dev)
    mask = (torch.arange(L, device=dev)[None, :] < lens[:, None]).float()
    h = (torch.rand(B, L, d, generator=g) * 2 - 1).to(dev)
    ht = (torch.rand(B, d, generator=g) * 2 - 1).to(dev)
    go = (torch.rand(B, d, generator=g) * 2 - 1).to(dev)
    U = min(B * L, 100000)
    table = torch.rand(U, d, generator=g).to(dev)
    idx = torch.randint(0, U, (B * L,), generator=g).to(dev)
    flat_grad = h.reshape(-1, d)
    W1 = (torch.rand(4 * d, 80, generator=g) * 0.4 - 0.2).to(dev).requires_grad_()
    b1 = torch.rand(80, generator=g).to(dev).requires_grad_()
    W2 = (torch.rand(80, 40, generator=g) * 0.4 - 0.2).to(dev).requires_grad_()
    b2 = torch.rand(40, generator=g).to(dev).requires_grad_()
    w3 = torch.rand(40, 1, generator=g).to(dev).requires_grad_()
    b3 = torch.rand(1, generator=g).to(dev).requires_grad_()
    m = (torch.rand(B, L, d, generator=g) * 2 - 1).to(dev)
    mt = (torch.rand(B, d, generator=g) * 2 - 1).to(dev)
    x_dense = torch.rand(B, 4 * d, generator=g).to(dev)
    Wd = torch.rand(4 * d, 200, generator=g).to(dev).requires_grad_()
    bd = torch.rand(200, generator=g).to(dev).requires_grad_()
    eps = 1e-8

    def din(hh, tt):
        t = tt[:, None, :].expand_as(hh)
        x = torch.cat([hh, t, hh - t, hh * t], dim=-1)
        z = torch.relu(x @ W1 + b1)
        z = torch.relu(z @ W2 + b2)
        s = (z @ w3).squeeze(-1) + b3
        s = s * mask
        return (s[..., None] * hh).sum(1)

    def content(mm, mtt, hh):
        nt = torch.sqrt((mtt * mtt).sum(-1) + eps)
        nm = torch.sqrt((mm * mm).sum(-1) + eps)
        a = (mm * mtt[:, None, :]).sum(-1) / (nt[:, None] * nm) * mask
        return (a[..., None] * mm).sum(1), (a[..., None] * hh).sum(1)

    def pool(hh):
        return (hh * mask[..., None]).sum(1) / lens.clamp(min=1)[:, None].float()

    def topk():
        s = (h * ht[:, None, :]).sum(-1).masked_fill(mask == 0, float("-inf"))
        top = torch.topk(s, min(K, L), dim=1).indices
        return torch.sort(top, dim=1).values

    sel_idx = topk()

    def backward_of(make):
        # Forward with autograd outside the timed region; time backward only.
        state = {}

        def setup():
            hr = h.clone().requires_grad_()
            tr = ht.clone().requires_grad_()
            state["out"] = make(hr, tr)

        def run():
            outs = state["out"]
            if isinstance(outs, tuple):
                torch.autograd.backward(list(outs), [go] * len(outs))
            else:
                outs.backward(go if outs.shape == go.shape else torch.ones_like(outs))
        return setup, run

    ops = {}
    ops["gather_fwd"] = (None, lambda: table.index_select(0, idx))
    ops["gather_bwd"] = (None, lambda: torch.zeros(U, d, device=dev).index_add_(0, idx, flat_grad))
    ops["din_fwd"] = (None, lambda: _nograd(lambda: din(h, ht)))
    ops["din_bwd"] = backward_of(lambda hr, tr: din(hr, tr))
    ops["content_fwd"] = (None, lambda: _nograd(lambda: content(m, mt, h)))
    ops["content_bwd"] = backward_of(lambda hr, tr: content(m.clone().requires_grad_(),
                                                            mt.clone().requires_grad_(), hr))
    ops["pool_fwd"] = (None, lambda: _nograd(lambda: pool(h)))
    ops["pool_bwd"] = backward_of(lambda hr, tr: pool(hr))
    ops["topk"] = (None, topk)
    ops["select_fwd"] = (None, lambda: torch.gather(
        h, 1, sel_idx[..., None].expand(-1, -1, d)))
    ops["dense_fwd"] = (None, lambda: _nograd(lambda: torch.relu(x_dense @ Wd + bd)))
    ops["dense_bwd"] = backward_of(lambda hr, tr: torch.relu(x_dense.clone().requires_grad_() @ Wd + bd))
    return ops


def _nograd(fn):
    with torch.no_grad():
        return fn()


def run_torch(L, d, dev, reps):
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    res = {}
    for name, (setup, fn) in torch_ops(L, d, dev).items():
        if setup is None:
            res[name] = best_time(fn, reps, sync)
        else:
            best = 1e30
            for _ in range(reps + 1):  # first is a warm-up
                setup()
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                best = min(best, time.perf_counter() - t0)
            res[name] = best
    return res


def run_ours(bench, dv, L, d, threads):
    """Runs kernels_bench for one device and shape; {op: (ms, rate, unit, peak)}."""
    cmd = [bench, f"--threads={threads}", f"--shapes={L}:{d}"]
    cmd += ["--gpu", "--no-cpu"] if dv == "gpu" else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    ours = {}
    for line in out.splitlines():
        mt = re.match(r"RESULT dev=(\w+) op=(\w+) L=(\d+) d=(\d+) ms=([\d.]+) rate=([\d.]+) unit=(\S+)(?: peak_frac=([\d.]+))?", line)
        if mt and mt.group(1) == dv:
            _, op, _, _, ms, rate, unit, peak = mt.groups()
            ours[op] = (float(ms), float(rate), unit, peak)
    return ours


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="bazel-bin/bench/kernels_bench")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true", help="GPU rows only")
    ap.add_argument("--rounds", type=int, default=3,
                    help="ours-then-torch rounds per shape; medians are printed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"BLAS: {[l.strip() for l in torch.__config__.show().splitlines() if 'BLAS' in l]}")
    probe = subprocess.run([args.bench, "--gpu", "--probe"], capture_output=True, text=True)
    gpu_ok = probe.returncode == 0 and torch.cuda.is_available()
    if args.gpu and not gpu_ok:
        print("INFO gpu rows skipped: " + (probe.stdout.strip().splitlines() or ["?"])[-1])
    devs = ([] if args.skip_cpu else ["cpu"]) + (["gpu"] if args.gpu and gpu_ok else [])
    print(f"{'dev':4} {'op':12} {'L':>5} {'d':>3} {'ours ms':>9} {'rate':>9} {'unit':8} "
          f"{'torch ms':>9} {'ratio':>6} {'range':>11} {'peak':>6}")
    # Ours and torch alternate shape by shape and round by round, so both
    # sides of a ratio see the same load on a shared machine; each figure is
    # the median over the rounds (each round: best of `reps` calls).
    for dv in devs:
        for L in (50, 1000):
            for d in (32, 64):
                reps = 10 if dv == "gpu" else (2 if L >= 1000 else 10)
                rounds = []
                for _ in range(max(1, args.rounds)):
                    ours = run_ours(args.bench, dv, L, d, args.threads)
                    tr = run_torch(L, d, "cuda" if dv == "gpu" else "cpu", reps)
                    rounds.append((ours, tr))
                for op in rounds[0][1]:
                    if op not in rounds[0][0]:
                        continue
                    ms = statistics.median(o[op][0] for o, _ in rounds)
                    rate = statistics.median(o[op][1] for o, _ in rounds)
                    t = statistics.median(tr[op] for _, tr in rounds) * 1e3
                    ratios = sorted(tr[op] * 1e3 / o[op][0] for o, tr in rounds)
                    unit, peak = rounds[0][0][op][2], rounds[0][0][op][3]
                    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
                    print(f"{dv:4} {op:12} {L:5d} {d:3d} {ms:9.3f} {rate:9.2f} {unit:8} "
                          f"{t:9.3f} {statistics.median(ratios):6.2f} {spread:>11} {peak or '':>6}",
                          flush=True)


if __name__ == "__main__":
    main()
