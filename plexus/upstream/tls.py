"""TLS client contexts for upstream connections: built once at startup, shared, never per request.

Theory
------
* One ``ssl.SSLContext`` per distinct trust setting. ``client_context(ca_file, verify, env)``
  builds it. ``contexts(providers)`` builds one for every https provider, sharing a context
  between providers with the same ``(ca_file, tls_verify)``. Loading a CA bundle costs ~20 ms,
  so it happens at startup, where a bad bundle also fails loudly instead of on the first request.
* Default trust is exactly ``httpx.create_ssl_context()``'s: ``$SSL_CERT_FILE`` if set, else
  ``$SSL_CERT_DIR`` if set, else certifi's bundle. A provider's ``ca_file`` is trusted *in
  addition* to it (``load_verify_locations``), so a private CA never drops the public roots.
* ``verify=False`` checks neither certificate nor hostname (``CERT_NONE``). The startup warning
  lives in ``__main__``. ``ca_file`` is then irrelevant.
* ALPN always offers exactly ``http/1.1``: we speak nothing else, and a server that would pick h2
  must see that we cannot.
* Failures raise ``TLSSetupError`` (a ValueError) with a message that names the file and says what
  is wrong. ``app.make_transports`` turns it into a ``ConfigError`` for the provider's key.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

ALPN = ["http/1.1"]


class TLSSetupError(ValueError):
    """A CA bundle that cannot be loaded (missing, unreadable, not PEM, no certificate).

    ``source``: "ca_file", "SSL_CERT_FILE", "SSL_CERT_DIR" or "certifi"; ``provider``: the first
    provider it failed for (set by ``contexts``).
    """

    source = ""
    provider = ""


def _load_error(what: str, path: str, exc: Exception) -> TLSSetupError:
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            why = "no PEM certificate found in it"
        else:  # a damaged PEM block: "[X509] PEM lib"
            why = f"not a valid PEM CA bundle ({exc.strerror or exc})"
    elif isinstance(exc, OSError):
        why = exc.strerror or str(exc)
    else:
        why = str(exc) or type(exc).__name__
    err = TLSSetupError(f"cannot load {what} {path!r}: {why}")
    err.source = what if what in ("ca_file", "SSL_CERT_FILE", "SSL_CERT_DIR") else "certifi"
    return err


def client_context(ca_file: str = "", verify: bool = True, env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A client SSLContext: default trust (as httpx builds it) + ``ca_file``, or no verification."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        env = os.environ if env is None else env
        if env.get("SSL_CERT_FILE"):
            what, path, kw = "SSL_CERT_FILE", env["SSL_CERT_FILE"], "cafile"
        elif env.get("SSL_CERT_DIR"):
            what, path, kw = "SSL_CERT_DIR", env["SSL_CERT_DIR"], "capath"
        else:
            import certifi
            what, path, kw = "the certifi bundle", certifi.where(), "cafile"
        try:
            ctx = ssl.create_default_context(**{kw: path})
        except (OSError, ValueError) as e:
            raise _load_error(what, path, e) from None
        if ca_file:
            try:
                ctx.load_verify_locations(cafile=ca_file)
            except (OSError, ValueError) as e:
                raise _load_error("ca_file", ca_file, e) from None
    ctx.set_alpn_protocols(ALPN)
    return ctx


def contexts(providers, env: Mapping[str, str] | None = None) -> dict[str, ssl.SSLContext]:
    """{provider name: its context} for every https provider; one context per distinct setting.

    Raises ``TLSSetupError`` whose ``provider`` attribute names the first provider it failed for.
    """
    built: dict[tuple, ssl.SSLContext] = {}
    out = {}
    for p in providers:
        if p.scheme != "https":
            continue
        key = (p.ca_file, True) if p.tls_verify else ("", False)
        ctx = built.get(key)
        if ctx is None:
            try:
                ctx = built[key] = client_context(p.ca_file, p.tls_verify, env)
            except TLSSetupError as e:
                e.provider = p.name
                raise
        out[p.name] = ctx
    return out
