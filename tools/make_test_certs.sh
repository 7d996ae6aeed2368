#!/usr/bin/env bash
# Makes a test certificate authority and certificates for TLS between the
# mim processes (docs/OPERATIONS.md, "Security"), with Debian's openssl:
#
#   tools/make_test_certs.sh DIR [SAN...]
#
# writes into DIR (created if missing; existing files are replaced):
#   ca.pem, ca.key          the test CA (servers' --tls_client_ca, clients'
#                           --tls_ca)
#   server.pem, server.key  a server certificate for 127.0.0.1, ::1 and
#                           localhost, plus each SAN given ("DNS:host",
#                           "IP:10.0.0.5"): the servers' --tls_cert/--tls_key
#   client.pem, client.key  a client certificate (CN mim-test-client): the
#                           clients' --tls_client_cert/--tls_client_key
# Keys are ECDSA P-256, mode 600; certificates are valid for 30 days.
# For tests and demos only: a real deployment's certificates come from the
# operator's own CA.
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: tools/make_test_certs.sh DIR [SAN...]  (SAN: DNS:name or IP:addr)" >&2
  exit 2
fi
dir=$1
shift
san="IP:127.0.0.1,IP:::1,DNS:localhost"
for extra in "$@"; do
  if [[ ! "$extra" =~ ^(DNS|IP):[A-Za-z0-9.:*-]+$ ]]; then
    echo "make_test_certs: SAN '$extra' is not DNS:name or IP:address" >&2
    exit 2
  fi
  san="$san,$extra"
done
if ! command -v openssl >/dev/null; then
  echo "make_test_certs: openssl not found (apt-get install openssl, or tools/setup.sh)" >&2
  exit 1
fi

mkdir -p "$dir"
umask 077
days=30
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# The CA.
key "$dir/ca.key"
openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days" \
  -subj "/CN=mim test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$dir/ca.pem" 2>/dev/null

# sign NAME CN EXTENSIONS: NAME.key and NAME.pem signed by the CA.
sign() {
  local name=$1 cn=$2 ext=$3
  key "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$tmp/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$tmp/$name.ext"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$days" \
    -extfile "$tmp/$name.ext" -out "$dir/$name.pem" 2>/dev/null
}

sign server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=serverAuth
subjectAltName=$san"
sign client mim-test-client "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=clientAuth"

chmod 600 "$dir"/*.key
chmod 644 "$dir"/*.pem
openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" "$dir/client.pem" >/dev/null
echo "make_test_certs: CA, server ($san) and client certificates in $dir" >&2
