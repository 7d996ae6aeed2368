#!/usr/bin/python3
"""Python client of the serving tier (//serving:server, proto/serving.proto).

Needs Debian's python3-grpcio and python3-protobuf and the protoc and
grpc_python_plugin binaries (protobuf-compiler, protobuf-compiler-grpc;
tools/setup.sh installs them); nothing from pip. The Python stubs are
generated from proto/serving.proto on first use into a cache directory keyed
by a hash of the proto and the library versions, and regenerated whenever
the proto changes; they are never part of the repository.

As a library:

    sys.path.insert(0, "tools")
    from serving_client import MimServingClient, ServingError
    with MimServingClient("127.0.0.1:8500", timeout_s=5) as client:
        scores, version, stale = client.predict(
            1, {"age_bucket": 2}, behaviors=[1, 2], candidates=[4, 5])

As a command (exit 0: success, 1: the RPC failed, 2: bad usage):

    tools/serving_client.py --target=H:P predict --user=1 \\
        --features age_bucket=2,gender=1 --behaviors=1,2,3 --candidates=4,5,6 \\
        [--genres "1,2;3;"]
    tools/serving_client.py --target=H:P upsert --item=N --text "..." [--genres 1,2]
    tools/serving_client.py --target=H:P upsert --item=N --vector 0.1,0.2,...
    tools/serving_client.py --target=H:P status

`--json` prints one JSON document on stdout instead of text; a failed RPC
then prints {"ok": false, "code": ..., "error": ...} as well as the message on
stderr.

Security (docs/OPERATIONS.md, "Security"): `--tls_ca=FILE` talks TLS to a
server started with --tls_cert (`--tls_client_cert`/`--tls_client_key` add a
client certificate for one with --tls_client_ca); `--auth_token_file=FILE`
sends the token in it (mode 600) with every call, for a server with
--auth_tokens (Predict and status need a read token, upsert an admin one).
As a library: MimServingClient(target, tls=TlsFiles(ca=...),
token=read_token_file(path)).
"""

import argparse
import hashlib
import importlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

import grpc
import google.protobuf

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PROTO = os.path.join(_REPO_ROOT, "proto", "serving.proto")
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

EXIT_FAILED = 1
EXIT_USAGE = 2


class ServingError(Exception):
    """A serving RPC failed. `code` is the gRPC status code name (e.g.
    "INVALID_ARGUMENT"), `message` the server's message, `method` the RPC."""

    def __init__(self, method, code, message):
        super().__init__(f"{method} failed: {code}: {message}")
        self.method = method
        self.code = code
        self.message = message


class StubError(Exception):
    """The Python stubs could not be generated or imported."""


# RFC 6750 b64token, 16..4096 characters: the servers' rule
# (base/grpc_auth.h).
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def read_token_file(path):
    """The bearer token in `path`: its one non-empty line that is not a '#'
    comment. Raises ValueError naming the file when it is readable or
    writable by group or others (chmod 600), holds no or several token
    lines, or the token is malformed; OSError when it cannot be read."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"--auth_token_file: {path} has mode {stat.S_IMODE(mode):04o}: a "
            f"token file must not be readable or writable by group or others; "
            f"run chmod 600 {path}")
    with open(path, encoding="ascii", errors="replace") as f:
        lines = [l.strip() for l in f]
    tokens = [l for l in lines if l and not l.startswith("#")]
    if len(tokens) != 1:
        raise ValueError(f"--auth_token_file: {path} must hold exactly one "
                         f"token line, has {len(tokens)}")
    token = tokens[0]
    if not (16 <= len(token) <= 4096 and _TOKEN_RE.fullmatch(token)):
        raise ValueError(f"--auth_token_file: {path} does not hold a valid "
                         f"token ({len(token)} characters)")
    return token


class TlsFiles:
    """PEM files for TLS to the server: `ca` (the CA that signed the server's
    certificate; required) and, for mutual TLS, `cert` and `key` (this
    client's certificate and private key, both or neither)."""

    def __init__(self, ca, cert=None, key=None):
        if not ca:
            raise ValueError("TLS needs the CA file (--tls_ca)")
        if bool(cert) != bool(key):
            raise ValueError("--tls_client_cert and --tls_client_key go "
                             "together: give both or neither")
        self.ca, self.cert, self.key = ca, cert, key

    def credentials(self):
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca),
            private_key=read(self.key) if self.key else None,
            certificate_chain=read(self.cert) if self.cert else None)


def _cache_root():
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = os.path.expanduser("~")
        base = os.path.join(home, ".cache") if home != "~" else None
    if base:
        try:
            os.makedirs(base, exist_ok=True)
            if os.access(base, os.W_OK):
                return os.path.join(base, "mim")
        except OSError:
            pass
    return tempfile.gettempdir()


def stub_dir(proto_path=DEFAULT_PROTO):
    """The directory holding serving_pb2.py and serving_pb2_grpc.py for this
    proto, generating them first if they are missing. The directory name
    hashes the proto's bytes and the protobuf/grpcio versions, so an edited
    proto (or an upgraded library) gets fresh stubs. Raises StubError naming
    what failed."""
    try:
        with open(proto_path, "rb") as f:
            proto_bytes = f.read()
    except OSError as e:
        raise StubError(f"cannot read {proto_path}: {e.strerror}") from e
    digest = hashlib.sha256(proto_bytes)
    digest.update(f"protobuf={google.protobuf.__version__};"
                  f"grpcio={grpc.__version__}".encode())
    root = _cache_root()
    name = "mim-pystubs-" + digest.hexdigest()[:16]
    final = os.path.join(root, name)
    if os.path.exists(os.path.join(final, "serving_pb2_grpc.py")):
        return final
    protoc = shutil.which("protoc")
    if protoc is None:
        raise StubError("protoc not found on PATH; install protobuf-compiler "
                        "(tools/setup.sh does)")
    if not os.access(GRPC_PYTHON_PLUGIN, os.X_OK):
        raise StubError(f"{GRPC_PYTHON_PLUGIN} not found; install "
                        "protobuf-compiler-grpc (tools/setup.sh does)")
    os.makedirs(root, exist_ok=True)
    # Generate into a private directory and rename it into place, so a
    # concurrent client never imports half-written stubs.
    tmp = tempfile.mkdtemp(prefix=name + ".tmp", dir=root)
    proto_dir = os.path.dirname(os.path.abspath(proto_path))
    cmd = [protoc, f"-I{proto_dir}", f"--python_out={tmp}",
           f"--grpc_out={tmp}",
           f"--plugin=protoc-gen-grpc={GRPC_PYTHON_PLUGIN}",
           os.path.join(proto_dir, os.path.basename(proto_path))]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StubError(f"{' '.join(cmd)} failed (exit {result.returncode}): "
                        f"{result.stderr.strip()}")
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process put the same stubs in place first.
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(os.path.join(final, "serving_pb2_grpc.py")):
            raise
    return final


_modules = None


def load_stubs(proto_path=DEFAULT_PROTO):
    """(serving_pb2, serving_pb2_grpc), generated and imported once."""
    global _modules
    if _modules is None:
        path = stub_dir(proto_path)
        if path not in sys.path:
            sys.path.insert(0, path)
        _modules = (importlib.import_module("serving_pb2"),
                    importlib.import_module("serving_pb2_grpc"))
    return _modules


def _fields(message):
    """Every scalar field of `message` by name, defaults included."""
    return {f.name: getattr(message, f.name)
            for f in message.DESCRIPTOR.fields}


def _int(value, what):
    """`value` as an int (ints and decimal strings); ValueError otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{what} must be an integer, got {value!r}")


class MimServingClient:
    """A client of one serving target (HOST:PORT). Every call carries a
    deadline of `timeout_s` seconds. Failed RPCs raise ServingError with the
    gRPC status code; malformed arguments (non-integer ids) raise ValueError
    before anything is sent. Request limits (candidate count, feature names,
    one genre list per candidate) are the server's to check: it answers
    INVALID_ARGUMENT naming the field. Safe for concurrent use from several
    threads (gRPC channels and stubs are).

    `tls`: a TlsFiles for a server with --tls_cert (None: plain channel).
    `token`: the bearer token sent with every call (see read_token_file),
    for a server with --auth_tokens; None: no token."""

    def __init__(self, target, timeout_s=5.0, proto_path=DEFAULT_PROTO,
                 tls=None, token=None):
        if not target:
            raise ValueError("target is empty; expected HOST:PORT")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self._pb, pb_grpc = load_stubs(proto_path)
        self.target = target
        self.timeout_s = timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        if tls is not None:
            self._channel = grpc.secure_channel(target, tls.credentials())
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.PredictionServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s,
                                               metadata=self._metadata)
        except grpc.RpcError as e:
            raise ServingError(method, e.code().name, e.details()) from None

    def predict_response(self, user_id, user_features, behaviors, candidates,
                         candidate_genres=None):
        """The whole PredictResponse message (scores, model_version, stale,
        cache_hits, rows_pulled, rows_unavailable). Arguments as for
        predict()."""
        request = self._pb.PredictRequest(user_id=_int(user_id, "user_id"))
        for name, value in (user_features or {}).items():
            request.user_features[name] = _int(value, f"user feature {name}")
        request.behavior_item_ids.extend(
            _int(b, "behavior item id") for b in behaviors or [])
        request.candidate_item_ids.extend(
            _int(c, "candidate item id") for c in candidates or [])
        if candidate_genres is not None:
            for genres in candidate_genres:
                request.candidate_features.add().genres.extend(
                    _int(g, "genre id") for g in genres or [])
        return self._call("Predict", request)

    def predict(self, user_id, user_features, behaviors, candidates,
                candidate_genres=None):
        """Scores `candidates` (item ids) for one user.

        user_features: {"age_bucket": int, "gender": int, "occupation": int}
        (any subset). behaviors: item ids, most recent last.
        candidate_genres: None, or one list of genre ids per candidate.
        Returns (scores in candidate order, model_version, stale)."""
        r = self.predict_response(user_id, user_features, behaviors,
                                  candidates, candidate_genres)
        return list(r.scores), r.model_version, r.stale

    def upsert_item(self, item_id, text=None, vector=None, genres=None):
        """Writes one item's content vector: encoded from `text` by the
        server, or `vector` as given. `genres` (genre ids) are read when the
        content table was filled by C-SFT, whose encoder fuses them with the
        text. Returns {"content_version", "encoder", "norm"}; once it
        returns, every later Predict reads the new vector."""
        if text is None and vector is None:
            raise ValueError("upsert_item needs text or vector")
        request = self._pb.UpsertItemRequest(item_id=_int(item_id, "item_id"),
                                             text=text or "")
        if vector is not None:
            request.vector.extend(float(v) for v in vector)
        if genres is not None:
            request.genres.extend(_int(g, "genre id") for g in genres)
        return _fields(self._call("UpsertItem", request))

    def status(self):
        """The served model and the serving tier's counters, as a dict of
        GetStatusResponse's fields."""
        return _fields(self._call("GetStatus", self._pb.GetStatusRequest()))


# ---------------------------------------------------------------- command line

class UsageError(Exception):
    pass


def _int_list(text, what):
    if text is None or text.strip() == "":
        return []
    out = []
    for part in text.split(","):
        try:
            out.append(int(part.strip()))
        except ValueError:
            raise UsageError(f"{what}: '{part}' is not an integer "
                             f"(expected a comma-separated list like 1,2,3)")
    return out


def parse_features(text):
    """'age_bucket=2,gender=1' -> {"age_bucket": 2, "gender": 1}."""
    features = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            if not sep or not name:
                raise ValueError
            features[name] = int(value.strip())
        except ValueError:
            raise UsageError(f"--features: '{part}' is not NAME=INTEGER "
                             f"(e.g. age_bucket=2,gender=1)")
    return features


def parse_genres(text, num_candidates):
    """'1,2;3;' -> [[1, 2], [3], []]: one ';'-separated entry per candidate,
    each a comma-separated (possibly empty) list of genre ids."""
    if text is None:
        return None
    entries = text.split(";")
    if len(entries) != num_candidates:
        raise UsageError(
            f"--genres has {len(entries)} ';'-separated entries but there are "
            f"{num_candidates} candidates; give one per candidate (empty for "
            f"none), e.g. \"1,2;3;\" for 3 candidates")
    return [_int_list(e, "--genres") for e in entries]


def _float32(x):
    """The shortest decimal that reads back as the same float32 (a score
    0.2f prints as 0.2, not 0.20000000298023224)."""
    packed = struct.pack("<f", x)
    for digits in range(6, 10):
        shortest = float(f"{x:.{digits}g}")
        if struct.pack("<f", shortest) == packed:
            return shortest
    return x


def _print_json(doc):
    print(json.dumps(doc, indent=2, sort_keys=False))


def cmd_predict(client, args):
    candidates = _int_list(args.candidates, "--candidates")
    genres = parse_genres(args.genres, len(candidates))
    r = client.predict_response(args.user, parse_features(args.features),
                                _int_list(args.behaviors, "--behaviors"),
                                candidates, genres)
    if args.json:
        _print_json({"ok": True,
                     "model_version": r.model_version,
                     "stale": r.stale,
                     "cache_hits": r.cache_hits,
                     "rows_pulled": r.rows_pulled,
                     "rows_unavailable": r.rows_unavailable,
                     "scores": [{"item": c, "score": _float32(s)}
                                for c, s in zip(candidates, r.scores)]})
        return
    print(f"model_version {r.model_version}  stale={'yes' if r.stale else 'no'}"
          f"  cache_hits={r.cache_hits}  rows_pulled={r.rows_pulled}"
          f"  rows_unavailable={r.rows_unavailable}")
    if r.rows_unavailable:
        print(f"warning: {r.rows_unavailable} rows read as missing (a shard "
              f"could not be reached; the server runs --degraded_reads): "
              f"the scores are degraded", file=sys.stderr)
    if len(r.scores) != len(candidates):
        print(f"warning: {len(r.scores)} scores for {len(candidates)} "
              f"candidates", file=sys.stderr)
    print(f"{'item':>12}  score")
    for c, s in zip(candidates, r.scores):
        print(f"{c:>12}  {s:.6f}")


def cmd_upsert(client, args):
    vector = None
    if args.vector is not None:
        try:
            vector = [float(v) for v in args.vector.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--vector: '{args.vector}' is not a "
                             f"comma-separated list of numbers")
    if args.text is None and vector is None:
        raise UsageError("upsert needs --text or --vector")
    genres = None
    if args.genres is not None:
        genres = _int_list(args.genres, "--genres")
    r = client.upsert_item(args.item, text=args.text, vector=vector,
                           genres=genres)
    if args.json:
        _print_json({"ok": True, "item": args.item, **r})
        return
    print(f"item {args.item}: content_version={r['content_version']} "
          f"encoder={r['encoder']} norm={r['norm']:.6g}")
    if r["norm"] == 0:
        print(f"note: norm 0: no word of the text is known to the encoder",
              file=sys.stderr)


def cmd_status(client, args):
    r = client.status()
    if args.json:
        _print_json({"ok": True, **r})
        return
    width = max(len(k) for k in r)
    for k, v in r.items():
        print(f"{k:<{width}}  {v}")
    lookups = r.get("cache_hits", 0) + r.get("cache_misses", 0)
    if lookups:
        print(f"{'cache_hit_rate':<{width}}  "
              f"{r['cache_hits'] / lookups:.4f}")


def build_parser():
    p = argparse.ArgumentParser(
        prog="serving_client.py",
        description="Calls the mim serving tier (proto/serving.proto).",
        epilog="Exit status: 0 success, 1 the RPC failed (its gRPC code and "
               "message are printed), 2 bad usage.")
    p.add_argument("--target", required=True, help="server address HOST:PORT")
    p.add_argument("--timeout_s", type=float, default=5.0,
                   help="deadline of the RPC in seconds (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout")
    p.add_argument("--tls_ca", default=None,
                   help="PEM CA of the server's certificate: talk TLS")
    p.add_argument("--tls_client_cert", default=None,
                   help="PEM client certificate (mutual TLS)")
    p.add_argument("--tls_client_key", default=None,
                   help="PEM private key of --tls_client_cert")
    p.add_argument("--auth_token_file", default=None,
                   help="file holding the bearer token (mode 600)")
    sub = p.add_subparsers(dest="command", required=True)

    pr = sub.add_parser("predict", help="score candidates for one user")
    pr.add_argument("--user", type=int, required=True, help="user id")
    pr.add_argument("--features", default="",
                    help="user features NAME=V,... (age_bucket, gender, "
                         "occupation)")
    pr.add_argument("--behaviors", default="",
                    help="behaviour item ids, most recent last: 1,2,3")
    pr.add_argument("--candidates", required=True,
                    help="candidate item ids: 4,5,6")
    pr.add_argument("--genres", default=None,
                    help="genre ids per candidate, ';' between candidates: "
                         "\"1,2;3;\"")
    pr.set_defaults(run=cmd_predict)

    up = sub.add_parser("upsert", help="write one item's content vector")
    up.add_argument("--item", type=int, required=True, help="item id")
    up.add_argument("--text", default=None, help="item text to encode")
    up.add_argument("--vector", default=None,
                    help="the vector itself: comma-separated floats")
    up.add_argument("--genres", default=None,
                    help="the item's genre ids, comma-separated (read when "
                         "the content table was filled by C-SFT)")
    up.set_defaults(run=cmd_upsert)

    st = sub.add_parser("status", help="served model and counters")
    st.set_defaults(run=cmd_status)
    return p


def security_from_args(args):
    """{"tls": ..., "token": ...} for MimServingClient from the parsed
    --tls_ca, --tls_client_cert, --tls_client_key and --auth_token_file."""
    if not args.tls_ca and (args.tls_client_cert or args.tls_client_key):
        raise ValueError("--tls_client_cert/--tls_client_key need --tls_ca")
    tls = (TlsFiles(args.tls_ca, args.tls_client_cert, args.tls_client_key)
           if args.tls_ca else None)
    token = read_token_file(args.auth_token_file) if args.auth_token_file else None
    return {"tls": tls, "token": token}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    try:
        with MimServingClient(args.target, args.timeout_s,
                              **security_from_args(args)) as client:
            args.run(client, args)
    except (UsageError, ValueError, OSError) as e:
        print(f"serving_client: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StubError as e:
        print(f"serving_client: {e}", file=sys.stderr)
        return EXIT_FAILED
    except ServingError as e:
        if args.json:
            _print_json({"ok": False, "method": e.method, "code": e.code,
                         "error": e.message})
        print(f"serving_client: {e} (target {args.target})", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
