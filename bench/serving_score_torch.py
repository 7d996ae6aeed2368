#!/usr/bin/env python3
"""The scoring part of a serving request: C++ Predict vs the PyTorch forward.

bench/serving_score_bench (C++: CiubmModel::Predict on a warm workspace, on
the batch //serving:server builds for one request) and the same model's
forward in PyTorch, written the way a PyTorch user would (nn.Linear layers,
F.embedding lookups, torch.cat, bmm), on the same batch, run alternately
for a few rounds in this one script:

  round r: the C++ binary times --reps Predict calls (its median and min),
           then this process times --reps torch forwards under
           torch.no_grad() (median and min), same thread count.

The torch model reads the weights of the same saved model file
(model.mimmodel, format in worker/model/ciubm_model.h Save(): config, then
the flat dense params in DenseParamLayout order) and the batch the C++ side
scored (its --dump_dir JSON, rows included), so both compute the same
probabilities; the largest difference is printed as a faithfulness check.
Supported: the din backbone with any of the _ct / _mim switches (din,
din_ct, din_mim).

  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/bin/python3 \\
    bench/serving_score_torch.py --bench bazel-out/k8-opt/bin/bench/serving_score_bench \\
    --model_dir runs/serving_bench/model --threads 1 --rounds 5

Prints one "ROUND ..." line per round and candidate count, then one
"SUMMARY ..." line per candidate count: medians over the rounds and the
ratio torch / C++ (> 1: C++ faster) with its range over the rounds.
Exit status: 0 done, 1 a step failed, 2 the outputs disagree (> --tolerance).
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

COS_EPS = 1e-8  # kernels/content_ops.h kContentCosineEps
MAGIC = b"MIMMODEL"


def blas_in_use():
    """The BLAS library actually mapped into this process."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            path = parts[-1] if len(parts) >= 6 else ""
            if "blas" in path or "mkl" in path:
                libs.add(os.path.realpath(path))
    return ",".join(sorted(libs)) or "none"


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        vals = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def floats(self, n):
        t = torch.frombuffer(bytearray(self.data[self.pos:self.pos + 4 * n]),
                             dtype=torch.float32)
        self.pos += 4 * n
        return t


def read_model_file(path, verify=True):
    """Config dict and flat params of a model.mimmodel (versions 1 and 2)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != MAGIC:
        raise SystemExit(f"{path}: bad magic, not a mim model file")
    version, n = struct.unpack_from("<IQ", data, 8)
    payload = data[20:20 + n]
    if len(payload) != n or len(data) != 20 + n + 8:
        raise SystemExit(f"{path}: truncated (payload length {n})")
    if verify and fnv1a64(payload) != struct.unpack_from("<Q", data, 20 + n)[0]:
        raise SystemExit(f"{path}: checksum mismatch")
    r = Reader(payload)
    name_len = r.take("I")
    c = {"version": version,
         "name": payload[r.pos:r.pos + name_len].decode()}
    r.pos += name_len
    c["backbone"] = r.take("I")  # 0 avgpool, 1 din, 2 sim
    (c["content_target"], c["mim"], c["use_id_interest"],
     c["use_content_interest"], c["use_fusion"]) = (
        bool(x) for x in r.take("5B"))
    c["id_dim"], c["content_dim"], c["sim_k"] = r.take("3i")
    for key in ("mlp_hidden", "att_hidden"):
        k = r.take("I")
        c[key] = list(struct.unpack_from(f"<{k}i", payload, r.pos))
        r.pos += 4 * k
    r.take("Q")     # seed
    r.take("4f")    # adam lr, beta1, beta2, epsilon
    count = r.take("Q")
    return c, r.floats(count)


def mlp_input_width(c):
    d, dm = c["id_dim"], c["content_dim"]
    w = 6 * d
    if c["use_id_interest"]:
        w += d
    if c["mim"] and c["use_content_interest"]:
        w += dm
    if c["mim"] and c["use_fusion"]:
        w += d
    if c["content_target"] or c["mim"]:
        w += dm
    return w


class DinServing(nn.Module):
    """CiubmModel's forward for the din backbone (ciubm_model.h)."""

    def __init__(self, c):
        super().__init__()
        if c["backbone"] != 1:
            raise SystemExit(f"model {c['name']}: only the din backbone is "
                             "written here (din, din_ct, din_mim)")
        d = c["id_dim"]
        h1, h2 = c["att_hidden"]
        self.c = c
        self.uses_content = c["content_target"] or c["mim"]
        self.att = nn.Sequential(nn.Linear(4 * d, h1), nn.ReLU(),
                                 nn.Linear(h1, h2), nn.ReLU(),
                                 nn.Linear(h2, 1))
        layers, width = [], mlp_input_width(c)
        for h in c["mlp_hidden"]:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def load_flat(self, params):
        """Copies the flat params (DenseParamLayout order; weights stored
        in x out, nn.Linear keeps out x in)."""
        linears = []
        if self.c["use_id_interest"]:
            linears += [m for m in self.att if isinstance(m, nn.Linear)]
        linears += [m for m in self.mlp if isinstance(m, nn.Linear)]
        off = 0
        with torch.no_grad():
            for lin in linears:
                n_in, n_out = lin.in_features, lin.out_features
                w = params[off:off + n_in * n_out].view(n_in, n_out)
                lin.weight.copy_(w.t())
                off += n_in * n_out
                lin.bias.copy_(params[off:off + n_out])
                off += n_out
        if off != params.numel():
            raise SystemExit(f"model file has {params.numel()} params, the "
                             f"layout needs {off}")

    def forward(self, b):
        ids, cont = b["id_table"], b["content_table"]
        h_t = F.embedding(b["target"], ids)                     # [B, d]
        g = F.embedding(b["genres"], ids)                       # [B, G, d]
        genre = g.sum(1) / b["genre_len"][:, None]
        h = F.embedding(b["beh"], ids)                          # [B, L, d]
        mask = b["mask"]                                        # [B, L]
        feats = [F.embedding(b["user"], ids), F.embedding(b["age"], ids),
                 F.embedding(b["gender"], ids), F.embedding(b["occ"], ids),
                 genre, h_t]
        if self.c["use_id_interest"]:
            ht = h_t[:, None, :].expand_as(h)
            score = self.att(torch.cat([h, ht, h - ht, h * ht], -1))
            score = score.squeeze(-1) * mask
            feats.append(torch.bmm(score[:, None, :], h).squeeze(1))
        if self.uses_content:
            m_t = F.embedding(b["ctgt"], cont)                  # [B, dm]
            if self.c["mim"]:
                m = F.embedding(b["cbeh"], cont)                # [B, L, dm]
                dot = torch.bmm(m, m_t[:, :, None]).squeeze(-1)
                norm = torch.sqrt((m * m).sum(-1) + COS_EPS) * torch.sqrt(
                    (m_t * m_t).sum(-1, keepdim=True) + COS_EPS)
                alpha = (dot / norm * mask)[:, None, :]         # [B, 1, L]
                if self.c["use_content_interest"]:
                    feats.append(torch.bmm(alpha, m).squeeze(1))
                if self.c["use_fusion"]:
                    feats.append(torch.bmm(alpha, h).squeeze(1))
            feats.append(m_t)
        return torch.sigmoid(self.mlp(torch.cat(feats, -1)).squeeze(-1))


def batch_tensors(j):
    """The dumped Batch as index tensors into tables with a zero row last
    (for the -1 padding index)."""
    B, L = j["batch_size"], j["max_len"]
    d, dm = j["id_dim"], j["content_dim"]
    ids = torch.tensor(j["id_rows"], dtype=torch.float32).view(-1, d)
    ids = torch.cat([ids, torch.zeros(1, d)])
    cont = torch.tensor(j["content_rows"], dtype=torch.float32).view(-1, dm)
    cont = torch.cat([cont, torch.zeros(1, dm)])
    zid, zc = ids.shape[0] - 1, cont.shape[0] - 1

    def idx(v, zero, shape=None):
        t = torch.tensor([zero if x < 0 else x for x in v], dtype=torch.long)
        return t.view(*shape) if shape else t

    off = j["genre_offsets"]
    G = max(1, max(off[i + 1] - off[i] for i in range(B)))
    genres, glen = [], []
    for i in range(B):
        g = j["genre_rows"][off[i]:off[i + 1]]
        genres.append(g + [-1] * (G - len(g)))
        glen.append(max(1, len(g)))
    lens = torch.tensor(j["lens"])
    return dict(
        id_table=ids, content_table=cont,
        user=idx(j["user_idx"], zid), age=idx(j["age_idx"], zid),
        gender=idx(j["gender_idx"], zid), occ=idx(j["occ_idx"], zid),
        target=idx(j["target_idx"], zid),
        genres=idx(sum(genres, []), zid, (B, G)),
        genre_len=torch.tensor(glen, dtype=torch.float32),
        beh=idx(j["behavior_idx"], zid, (B, L)),
        mask=(torch.arange(L)[None, :] < lens[:, None]).float(),
        ctgt=idx(j["content_target_idx"], zc),
        cbeh=idx(j["content_behavior_idx"], zc, (B, L)))


def time_torch(model, b, reps, warmup):
    with torch.no_grad():
        for _ in range(warmup):
            model(b)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(b)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def run_cpp(args, dump_dir):
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    cmd = [args.bench, f"--model_dir={args.model_dir}",
           f"--candidates={args.candidates}", f"--threads={args.threads}",
           f"--reps={args.reps}", f"--warmup={args.warmup}",
           f"--behaviors={args.behaviors}", f"--seed={args.seed}"]
    if args.ps:
        cmd.append(f"--ps={args.ps}")
    if dump_dir:
        cmd.append(f"--dump_dir={dump_dir}")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n"
                         f"{out.stderr}")
    results = {}
    for line in out.stdout.splitlines():
        if not line.startswith("RESULT "):
            continue
        kv = dict(p.split("=", 1) for p in line.split()[1:])
        results[int(kv["candidates"])] = kv
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", required=True,
                    help="bazel-out/k8-opt/bin/bench/serving_score_bench")
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--ps", default="",
                    help="shards: rows from the tables (else random rows)")
    ap.add_argument("--candidates", default="100,1000")
    ap.add_argument("--behaviors", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest |p_cpp - p_torch| accepted")
    ap.add_argument("--json_out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    manifest = json.load(open(os.path.join(args.model_dir, "manifest.json")))
    model_file = os.path.join(args.model_dir, manifest["model_file"])
    config, params = read_model_file(model_file)
    model = DinServing(config)
    model.load_flat(params)
    model.eval()
    counts = [int(x) for x in args.candidates.split(",")]
    print(f"INFO torch={torch.__version__} threads={torch.get_num_threads()} "
          f"blas={blas_in_use()} model={config['name']} "
          f"model_file={model_file} dense_params={params.numel()} "
          f"rows={'shards' if args.ps else 'random'}", flush=True)

    batches = {}
    per_round = {c: [] for c in counts}
    with tempfile.TemporaryDirectory() as dump_dir:
        for r in range(args.rounds):
            cpp = run_cpp(args, dump_dir if r == 0 else "")
            for c in counts:
                if c not in batches:
                    with open(os.path.join(dump_dir, f"batch_{c}.json")) as f:
                        j = json.load(f)
                    b = batch_tensors(j)
                    with torch.no_grad():
                        probs = model(b)
                    diff = (probs - torch.tensor(j["probs"])).abs().max().item()
                    print(f"CHECK candidates={c} B={j['batch_size']} "
                          f"L={j['max_len']} id_rows={j['num_id_rows']} "
                          f"content_rows={j['num_content_rows']} "
                          f"max_abs_diff(prob cpp vs torch)={diff:.3g}",
                          flush=True)
                    if not diff <= args.tolerance:
                        print(f"serving_score_torch: outputs differ by {diff} "
                              f"> --tolerance {args.tolerance}: not the same "
                              "model", file=sys.stderr)
                        sys.exit(2)
                    batches[c] = b
                t_med, t_min = time_torch(model, batches[c], args.reps,
                                          args.warmup)
                c_med = float(cpp[c]["predict_ms(median)"])
                c_min = float(cpp[c]["predict_ms(min)"])
                row = dict(round=r + 1, cpp_median=c_med, cpp_min=c_min,
                           torch_median=t_med, torch_min=t_min,
                           ratio=t_med / c_med, build_ms=float(
                               cpp[c]["build_ms(median)"]))
                per_round[c].append(row)
                print(f"ROUND {r + 1} candidates={c} threads={args.threads} "
                      f"cpp_ms(median)={c_med:.4f} cpp_ms(min)={c_min:.4f} "
                      f"torch_ms(median)={t_med:.4f} "
                      f"torch_ms(min)={t_min:.4f} "
                      f"ratio={t_med / c_med:.2f}", flush=True)

    summary = []
    for c in counts:
        rows = per_round[c]
        ratios = [x["ratio"] for x in rows]
        s = dict(candidates=c, behaviors=args.behaviors, threads=args.threads,
                 rounds=len(rows), reps=args.reps,
                 cpp_ms_median=statistics.median(x["cpp_median"] for x in rows),
                 cpp_ms_min=min(x["cpp_min"] for x in rows),
                 torch_ms_median=statistics.median(
                     x["torch_median"] for x in rows),
                 torch_ms_min=min(x["torch_min"] for x in rows),
                 build_ms_median=statistics.median(
                     x["build_ms"] for x in rows),
                 ratio_median=statistics.median(ratios),
                 ratio_min=min(ratios), ratio_max=max(ratios),
                 min_ratio=min(x["torch_min"] for x in rows) /
                 min(x["cpp_min"] for x in rows))
        summary.append(s)
        print(f"SUMMARY candidates={c} threads={args.threads} "
              f"cpp_ms(median)={s['cpp_ms_median']:.4f} "
              f"torch_ms(median)={s['torch_ms_median']:.4f} "
              f"ratio(median)={s['ratio_median']:.2f} "
              f"range={s['ratio_min']:.2f}-{s['ratio_max']:.2f} "
              f"ratio(min/min)={s['min_ratio']:.2f} "
              f"build_ms(median)={s['build_ms_median']:.4f}", flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"torch": torch.__version__, "blas": blas_in_use(),
                       "model": config["name"], "threads": args.threads,
                       "rows": "shards" if args.ps else "random",
                       "summary": summary, "rounds": per_round}, f, indent=2)


if __name__ == "__main__":
    main()
