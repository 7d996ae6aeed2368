#!/usr/bin/python3
"""The serving part of the main job (tools/run_demo.sh): a few Predict calls
through the Python client, a brand-new item upserted and scored with its
content at once, and the measured upsert-to-visible time.

    /usr/bin/python3 tools/serving_demo.py --target=127.0.0.1:PORT --data=DIR \
        [--tls_ca=CA.pem [--tls_client_cert=C.pem --tls_client_key=C.key]] \
        [--auth_token_file=FILE]

DIR holds the dataset the model was trained on (test.tsv, item_text.tsv).
The security flags are serving_client.py's; the token must have the admin
role (the demo upserts items).
Upsert-to-visible: for --probes new item ids, the time from sending
UpsertItem to the first Predict answer whose score for that item differs
from its score before the upsert (read-your-write makes that the very next
call; the figure is the two round trips).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_client import MimServingClient, security_from_args  # noqa: E402


def read_samples(path, n):
    out = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            c = line.rstrip("\n").split("\t")
            genres = [int(x) for x in c[7].split(",") if x]
            behavior = [int(x) for x in c[8].split(",") if x]
            out.append(dict(user=int(c[1]), item=int(c[2]), label=int(c[3]),
                            age=int(c[4]), gender=int(c[5]), occ=int(c[6]),
                            genres=genres, behavior=behavior))
            if len(out) >= n:
                break
    return out


def read_texts(path):
    texts = {}
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            item, _, rest = line.rstrip("\n").partition("\t")
            texts[int(item)] = rest.replace("\t", " ")
    return texts


def features(s):
    return {"age_bucket": s["age"], "gender": s["gender"],
            "occupation": s["occ"]}


def percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--users", type=int, default=3)
    p.add_argument("--probes", type=int, default=100)
    p.add_argument("--tls_ca", default=None)
    p.add_argument("--tls_client_cert", default=None)
    p.add_argument("--tls_client_key", default=None)
    p.add_argument("--auth_token_file", default=None)
    a = p.parse_args()

    samples = read_samples(os.path.join(a.data, "test.tsv"), 2000)
    texts = read_texts(os.path.join(a.data, "item_text.tsv"))
    with MimServingClient(a.target, timeout_s=10,
                          **security_from_args(a)) as client:
        st = client.status()
        print(f"serving model {st['model_version']} ({st['model_name']}), "
              f"ID table {st['id_table']}, content table "
              f"{st['content_table'] or '-'} (version {st['content_version']})")

        # A few users, each with the clicked item and four others.
        seen = set()
        shown = 0
        for s in samples:
            if s["user"] in seen or shown >= a.users:
                continue
            seen.add(s["user"])
            shown += 1
            others = [x["item"] for x in samples[shown * 7: shown * 7 + 4]]
            cands = [s["item"]] + others
            scores, version, stale = client.predict(
                s["user"], features(s), s["behavior"], cands)
            print(f"\nuser {s['user']} ({len(s['behavior'])} behaviours), "
                  f"test label of item {s['item']}: {s['label']}")
            for item, score in sorted(zip(cands, scores), key=lambda t: -t[1]):
                print(f"  item {item:>8}  p(click) = {score:.4f}")

        # A brand-new item: no row anywhere until it is upserted.
        user = samples[0]
        best_item = user["item"]
        new_item = max(texts) + 1_000_000
        text = texts.get(best_item, "a new item")
        before, _, _ = client.predict(user["user"], features(user),
                                      user["behavior"], [new_item])
        t0 = time.perf_counter()
        up = client.upsert_item(new_item, text=text)
        after, _, _ = client.predict(user["user"], features(user),
                                     user["behavior"], [new_item])
        ms = (time.perf_counter() - t0) * 1e3
        print(f"\nnew item {new_item}, text of item {best_item}: "
              f"\"{text[:60]}...\"")
        print(f"  before UpsertItem: p(click) = {before[0]:.4f} (no content)")
        print(f"  after  UpsertItem: p(click) = {after[0]:.4f} (content "
              f"version {up['content_version']}, encoder {up['encoder']}); "
              f"visible {ms:.1f} ms after the upsert was sent")

        # Upsert-to-visible over many new items.
        items = sorted(texts)
        lat = []
        for i in range(a.probes):
            item = new_item + 1 + i
            txt = texts[items[(i * 7919) % len(items)]]
            s0, _, _ = client.predict(user["user"], features(user),
                                      user["behavior"], [item])
            t0 = time.perf_counter()
            client.upsert_item(item, text=txt)
            while True:
                s1, _, _ = client.predict(user["user"], features(user),
                                          user["behavior"], [item])
                if s1[0] != s0[0]:
                    break
                if time.perf_counter() - t0 > 10:
                    print(f"item {item}: still not visible after 10 s",
                          file=sys.stderr)
                    return 1
            lat.append((time.perf_counter() - t0) * 1e3)
        print(f"\nupsert-to-visible over {len(lat)} new items (Python client, "
              f"loopback): p50 {percentile(lat, 0.5):.1f} ms, "
              f"p99 {percentile(lat, 0.99):.1f} ms, max {max(lat):.1f} ms")
        st = client.status()
        hits, misses = st["cache_hits"], st["cache_misses"]
        ratio = hits / (hits + misses) if hits + misses else 0.0
        print(f"served {st['requests']} Predict calls; row cache hit ratio "
              f"{ratio:.2f} ({st['cache_bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
