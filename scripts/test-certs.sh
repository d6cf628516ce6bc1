#!/usr/bin/env bash
# Test certificates, made fresh for every test run (never committed, never reused):
#
#   scripts/test-certs.sh DIR
#
# DIR/ca.pem, ca-key.pem            the test CA
# DIR/server.pem, server-key.pem    a server certificate signed by it, valid for
#                                   localhost, 127.0.0.1 and ::1
# DIR/client.pem, client-key.pem    a client certificate signed by it (CN highway-client)
# DIR/other-ca.pem                  an unrelated CA: "the wrong CA" of the negative tests
# DIR/docker/{ca,cert,key}.pem      the client pair laid out as DOCKER_CERT_PATH expects
#
# Keys are EC P-256 (fast to make, accepted by Postgres, dockerd, the registry and
# rustls) and unencrypted; private keys are mode 0600 so Postgres accepts them.
set -euo pipefail
dir="${1:?usage: $0 DIR}"
command -v openssl >/dev/null || { echo "test-certs: openssl is not installed" >&2; exit 1; }
mkdir -p "$dir/docker"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

ca() { # ca NAME SUBJECT
    key "$1-key.pem"
    openssl req -x509 -new -key "$1-key.pem" -sha256 -days 2 -subj "$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -out "$1.pem" 2>/dev/null
}

leaf() { # leaf NAME SUBJECT EXT
    key "$1-key.pem"
    openssl req -new -key "$1-key.pem" -subj "$2" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
        -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=highway test CA"
ca other-ca "/CN=highway unrelated CA"
leaf server "/CN=localhost" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"
leaf client "/CN=highway-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
cp ca.pem docker/ca.pem
cp client.pem docker/cert.pem
cp client-key.pem docker/key.pem
chmod 600 docker/key.pem
rm -f ca.srl
