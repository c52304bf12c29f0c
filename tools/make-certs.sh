#!/usr/bin/env bash
# Makes TLS certificates for llmserve with openssl, into DIR (created if needed):
#
#   ca.pem, ca.key            a certificate authority
#   server.pem, server.key    CN localhost, SAN DNS:localhost and IP:127.0.0.1, signed by
#                             the CA: one certificate every service on this host can serve
#   client.pem, client.key    a client certificate signed by the CA (mutual TLS: the
#                             router's, for its calls to the cache and inference services)
# and with --test, for tests of what must be refused:
#   rogue-ca.pem, rogue-ca.key, rogue.pem, rogue.key   a CA nobody trusts, a client
#                             certificate from it
#   expired.pem, expired.key  a server certificate (as server.pem) that expired a day ago
#
# Keys are EC P-256 (quick to make); files are readable by their owner only.
#
#   bash tools/make-certs.sh DIR [--days N] [--test]      (N: validity, default 30)
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR [--days N] [--test]}
shift
days=30
test_set=0
while [ $# -gt 0 ]; do
  case $1 in
    --days) days=$2; shift 2 ;;
    --test) test_set=1; shift ;;
    *) echo "make-certs.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
cd "$dir"
umask 077
key=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

# sign NAME CN CA DAYS [openssl x509 flags...]: NAME.key and NAME.pem signed by CA.
sign() {
  local name=$1 cn=$2 ca=$3 valid=$4
  shift 4
  openssl req "${key[@]}" -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
    -days "$valid" "$@" -out "$name.pem"
  rm -f "$name.csr"
}

{
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
  openssl req -x509 "${key[@]}" -days "$days" -subj /CN=llmserve-ca -keyout ca.key -out ca.pem
  sign server localhost ca "$days" -extfile server.ext
  sign client llmserve-client ca "$days"
  if [ "$test_set" = 1 ]; then
    openssl req -x509 "${key[@]}" -days "$days" -subj /CN=rogue-ca -keyout rogue-ca.key \
      -out rogue-ca.pem
    sign rogue rogue-client rogue-ca "$days"
    sign expired localhost ca -1 -extfile server.ext
  fi
} >/dev/null 2>&1 || { echo "make-certs.sh: openssl failed in $dir" >&2; exit 1; }
