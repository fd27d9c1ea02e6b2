"""A throw-away certificate authority and server certificate for the bench's TLS scenario (S1-TLS).

Theory: the TLS scenario must run anywhere without network and without touching the system's
trust store, so the bench makes a fresh CA and a server certificate for 127.0.0.1 (IP SAN, plus
DNS localhost) at start, in its temporary directory, and hands the CA's PEM to every client that
must trust the mock: Plexus (the provider's `ca_file`), the load generator (an ssl context) and
nginx (`proxy_ssl_trusted_certificate`). With `trustme` importable it is used (pure Python, fast);
otherwise the `openssl` command line makes the same files (EC P-256 keys, CA:TRUE with keyCertSign,
server: serverAuth, SAN). Neither available: the TLS scenario is skipped with a note.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Certs:
    ca: str  # PEM of the CA certificate (what clients trust)
    cert: str  # PEM server certificate chain for 127.0.0.1
    key: str  # PEM private key of `cert`
    how: str  # "trustme" | "openssl"


def make_certs(directory: str) -> Certs | str:
    """-> Certs, or a sentence saying why no certificate could be made."""
    ca, cert, key = (os.path.join(directory, n) for n in ("ca.pem", "server.pem", "server.key"))
    try:
        import trustme
    except ImportError:
        trustme = None
    if trustme is not None:
        authority = trustme.CA()
        issued = authority.issue_cert("127.0.0.1", "localhost")
        authority.cert_pem.write_to_path(ca)
        issued.cert_chain_pems[0].write_to_path(cert)
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(cert, append=True)
        issued.private_key_pem.write_to_path(key)
        return Certs(ca, cert, key, "trustme")
    openssl = shutil.which("openssl")
    if openssl is None:
        return "neither the trustme package nor the openssl command is available"
    return _openssl(openssl, directory, ca, cert, key)


def _openssl(openssl: str, d: str, ca: str, cert: str, key: str) -> Certs | str:
    ca_key, csr, ext = (os.path.join(d, n) for n in ("ca.key", "server.csr", "server.ext"))
    with open(ext, "w") as f:
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature, keyEncipherment\n"
                "extendedKeyUsage = serverAuth\n"
                "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                "subjectKeyIdentifier = hash\n"
                "authorityKeyIdentifier = keyid, issuer\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/O=plexus bench/CN=plexus bench throw-away CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/O=plexus bench/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-sha256", "-extfile", ext],
    ]
    for argv in steps:
        try:
            p = subprocess.run(argv, cwd=d, capture_output=True, timeout=30,
                               stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"openssl failed: {e}"
        if p.returncode != 0:
            return f"openssl failed: {p.stderr.decode(errors='replace').strip()[-300:]}"
    return Certs(ca, cert, key, "openssl")
