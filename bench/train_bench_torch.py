#!/usr/bin/env python3
"""PyTorch twin of bench/train_bench.cc: din / din_mim training throughput.

The same model as worker/model (ciubm_model.h), written the way a PyTorch
user would write it, on the same samples:
  ID side: one nn.Embedding(sparse=True) table, 32-d, holding every user,
    age bucket, gender, occupation, genre and item id of the samples used
    (plus a zero padding row), N(0, 0.01) init, torch.optim.Adagrad
    (lr 0.05, initial accumulator 0.1, eps 1e-8: the PS table defaults,
    embedding/table_config.h), which updates only the rows touched.
  Content side: a frozen 64-d table from the vector file (zero row for items
    without a vector and for padding).
  DIN attention: MLP 80-40-1 (ReLU) on [h_i, h_t, h_i - h_t, h_i * h_t],
    no softmax, masked; content interest alpha_i = cos(m_t, m_i) with the
    kernels' smoothed norm, h_MM = sum alpha_i m_i, h_Fusion =
    sum alpha_i h_i; MLP 200-80-1 on the concat in ciubm_model.h's order;
    mean sigmoid cross-entropy; torch.optim.Adam (lr 1e-3) on dense params.
Samples [skip, skip + (warmup + steps) * batch) are parsed into tensors
before timing; only training steps (forward, backward, both optimizer
steps) are timed. Batches are padded to the longest behaviour in the batch,
as BatchBuilder does. Prints one "RESULT ..." line per model.

  /usr/bin/python3 bench/train_bench_torch.py --samples /tmp/syn/train.tsv \
      --vectors /tmp/syn/item_vectors.tsv --models din,din_mim
"""
import argparse
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ID_DIM = 32
CONTENT_DIM = 64
MAX_BEHAVIOR = 50
COS_EPS = 1e-8  # kernels/content_ops.h kContentCosineEps


def blas_in_use():
    """The BLAS library actually mapped into this process."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if "blas" in path or "mkl" in path:
                libs.add(os.path.realpath(path))
    return ",".join(sorted(libs)) or "none"


def matmul_gflops(n=512, reps=5):
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b
    best = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def read_samples(path, skip, count):
    rows = []
    with open(path) as f:
        header = f.readline()
        if not header.startswith("#mim-samples v1"):
            raise SystemExit(f"{path}: not a mim-samples v1 file")
        for i, line in enumerate(f):
            if i < skip:
                continue
            if len(rows) == count:
                break
            c = line.rstrip("\n").split("\t")
            genres = [int(x) for x in c[7].split(",")] if c[7] else []
            beh = [int(x) for x in c[8].split(",")] if c[8] else []
            rows.append((int(c[1]), int(c[2]), int(c[3]), int(c[4]),
                         int(c[5]), int(c[6]), genres, beh[-MAX_BEHAVIOR:]))
    if len(rows) < count:
        raise SystemExit(f"{path}: {len(rows)} samples after skip={skip}, "
                         f"need {count}")
    return rows


def read_vectors(path):
    vecs = {}
    with open(path) as f:
        header = f.readline()
        if not header.startswith("#mim-vectors v1"):
            raise SystemExit(f"{path}: not a mim-vectors v1 file")
        for line in f:
            item, vals = line.rstrip("\n").split("\t")
            vecs[int(item)] = [float(x) for x in vals.split(" ")]
    return vecs


class Vocab:
    """(field, raw id) -> row of the single ID table, first-seen order."""

    def __init__(self):
        self.rows = {}

    def __call__(self, field, value):
        return self.rows.setdefault((field, value), len(self.rows))


def build_batches(rows, batch, vectors):
    vocab = Vocab()
    content_rows = {}  # item -> row of the content table
    content_vals = []
    for vec in [[0.0] * CONTENT_DIM]:  # row 0: zero (padding / no vector)
        content_vals.append(vec)

    def crow(item):
        r = content_rows.get(item)
        if r is None:
            v = vectors.get(item)
            if v is None:
                r = 0
            else:
                r = len(content_vals)
                content_vals.append(v)
            content_rows[item] = r
        return r

    raw = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        L = max(len(r[7]) for r in chunk)
        G = max(1, max(len(r[6]) for r in chunk))
        user, age, gender, occ, target, label, ctgt = ([] for _ in range(7))
        genres, glen, beh, cbeh, lens = [], [], [], [], []
        for (u, it, lab, a, g, o, gs, bs) in chunk:
            user.append(vocab("user", u))
            age.append(vocab("age", a))
            gender.append(vocab("gender", g))
            occ.append(vocab("occ", o))
            target.append(vocab("item", it))
            label.append(float(lab))
            ctgt.append(crow(it))
            genres.append([vocab("genre", x) for x in gs] + [-1] * (G - len(gs)))
            glen.append(len(gs))
            beh.append([vocab("item", x) for x in bs] + [-1] * (L - len(bs)))
            cbeh.append([crow(x) for x in bs] + [0] * (L - len(bs)))
            lens.append(len(bs))
        raw.append((user, age, gender, occ, target, genres, glen, beh, lens,
                    ctgt, cbeh, label))
    pad = len(vocab.rows)  # padding row index of the ID table
    batches = []
    for (user, age, gender, occ, target, genres, glen, beh, lens, ctgt, cbeh,
         label) in raw:
        fix = lambda m: [[pad if x < 0 else x for x in r] for r in m]
        lens_t = torch.tensor(lens)
        L = len(beh[0])
        batches.append(dict(
            user=torch.tensor(user), age=torch.tensor(age),
            gender=torch.tensor(gender), occ=torch.tensor(occ),
            target=torch.tensor(target),
            genres=torch.tensor(fix(genres)),
            glen=torch.tensor(glen, dtype=torch.float32).clamp(min=1),
            beh=torch.tensor(fix(beh)).reshape(len(user), L),
            mask=(torch.arange(L)[None, :] < lens_t[:, None]).float(),
            ctgt=torch.tensor(ctgt),
            cbeh=torch.tensor(cbeh).reshape(len(user), L),
            label=torch.tensor(label)))
    content = torch.tensor(content_vals, dtype=torch.float32)
    return batches, pad + 1, pad, content


class DinMim(nn.Module):
    def __init__(self, num_ids, pad, content, mim):
        super().__init__()
        d, dm = ID_DIM, CONTENT_DIM
        self.mim = mim
        self.emb = nn.Embedding(num_ids, d, padding_idx=pad, sparse=True)
        nn.init.normal_(self.emb.weight, std=0.01)
        with torch.no_grad():
            self.emb.weight[pad].zero_()
        self.content = nn.Embedding.from_pretrained(content, freeze=True)
        self.att = nn.Sequential(nn.Linear(4 * d, 80), nn.ReLU(),
                                 nn.Linear(80, 40), nn.ReLU(),
                                 nn.Linear(40, 1))
        width = 7 * d + (dm + d + dm if mim else 0)
        self.mlp = nn.Sequential(nn.Linear(width, 200), nn.ReLU(),
                                 nn.Linear(200, 80), nn.ReLU(),
                                 nn.Linear(80, 1))
        # As CiubmModel::Create: He-uniform for ReLU layers, Xavier-uniform
        # for the linear outputs, zero biases.
        for seq in (self.att, self.mlp):
            layers = [m for m in seq if isinstance(m, nn.Linear)]
            for i, lin in enumerate(layers):
                if i + 1 < len(layers):
                    nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, b):
        e = self.emb
        h_t = e(b["target"])                                   # [B, d]
        genre = e(b["genres"]).sum(1) / b["glen"][:, None]     # mean, pad = 0
        h = e(b["beh"])                                        # [B, L, d]
        mask = b["mask"]
        ht = h_t[:, None, :].expand_as(h)
        score = self.att(torch.cat([h, ht, h - ht, h * ht], -1)).squeeze(-1)
        id_interest = torch.bmm((score * mask)[:, None, :], h).squeeze(1)
        feats = [e(b["user"]), e(b["age"]), e(b["gender"]), e(b["occ"]),
                 genre, h_t, id_interest]
        if self.mim:
            m = self.content(b["cbeh"])                        # [B, L, dm]
            m_t = self.content(b["ctgt"])                      # [B, dm]
            dot = torch.bmm(m, m_t[:, :, None]).squeeze(-1)
            norm = torch.sqrt((m * m).sum(-1) + COS_EPS) * torch.sqrt(
                (m_t * m_t).sum(-1, keepdim=True) + COS_EPS)
            alpha = (dot / norm * mask)[:, None, :]            # [B, 1, L]
            feats += [torch.bmm(alpha, m).squeeze(1),          # h_MM
                      torch.bmm(alpha, h).squeeze(1),          # h_Fusion
                      m_t]
        return self.mlp(torch.cat(feats, -1)).squeeze(-1)


def run(args, name, batches, num_ids, pad, content):
    torch.manual_seed(1)
    model = DinMim(num_ids, pad, content, mim=name == "din_mim")
    dense = [p for n, p in model.named_parameters()
             if p.requires_grad and not n.startswith("emb.")]
    opt_dense = torch.optim.Adam(dense, lr=1e-3)
    opt_sparse = torch.optim.Adagrad([model.emb.weight], lr=0.05,
                                     initial_accumulator_value=0.1, eps=1e-8)

    def step(b):
        opt_dense.zero_grad(set_to_none=True)
        opt_sparse.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(b), b["label"])
        loss.backward()
        opt_dense.step()
        opt_sparse.step()
        return loss

    for b in batches[:args.warmup]:
        step(b)
    timed = batches[args.warmup:]
    times = []
    loss = 0.0
    for b in timed:
        t0 = time.perf_counter()
        loss = step(b).item()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    samples = sum(int(b["label"].numel()) for b in timed)
    print(f"RESULT side=torch model={name} B={args.batch} steps={len(timed)} "
          f"threads={torch.get_num_threads()} "
          f"step_ms(mean)={total / len(timed) * 1e3:.2f} "
          f"step_ms(best)={min(times) * 1e3:.2f} "
          f"samples_per_s={samples / total:.0f} loss={loss:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", required=True)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--models", default="din,din_mim")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--skip", type=int, default=120000)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    n = (args.warmup + args.steps) * args.batch
    rows = read_samples(args.samples, args.skip, n)
    batches, num_ids, pad, content = build_batches(
        rows, args.batch, read_vectors(args.vectors))
    print(f"INFO side=torch torch={torch.__version__} blas={blas_in_use()} "
          f"matmul512_gflops={matmul_gflops():.1f} id_rows={num_ids} "
          f"content_rows={content.shape[0]}", flush=True)
    for name in args.models.split(","):
        if name not in ("din", "din_mim"):
            raise SystemExit(f"unknown model {name}, expected din or din_mim")
        run(args, name, batches, num_ids, pad, content)


if __name__ == "__main__":
    main()
