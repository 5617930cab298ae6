"""Client certificates are asked for by TLS and judged by the authenticator, as in Kubernetes.

Used by the API server (:6443) and the kubelet (:10250) alike.

Go's ``tls.RequestClientCert`` asks a client for a certificate and takes whatever it
sends; the API server's x509 authenticator then verifies it, and a certificate from
another CA, or an expired one, is answered ``401 Unauthorized`` with a Status body, not
with a failed handshake the client can only report as a TLS error.

Python's ``ssl`` has no such mode: ``CERT_OPTIONAL`` fails the handshake on a certificate
that does not verify, and ``CERT_NONE`` never asks for one. OpenSSL has it (a verify
callback that accepts), so ``request_client_certificates`` installs one through ctypes on
the context's ``SSL_CTX``, after checking that the pointer it found is that context's (its
verify mode and options must read back as Python sees them). When that check fails (another
Python build) nothing is changed and the TLS layer keeps verifying, which is safe, only less
helpful. Either way ``verify_client_certificate`` is what decides who a certificate names:
a certificate is never trusted because the handshake succeeded.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import logging
import ssl
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

__all__ = ["CertificateRefused", "request_client_certificates", "verify_client_certificate"]

_SSL_VERIFY_PEER = 0x01
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


@_VERIFY_CB
def _accept(preverify_ok: int, store_ctx: int) -> int:
    if not preverify_ok:
        # A failed check leaves OpenSSL errors queued (an EVP signature failure): left there, the
        # next read of the connection would report them as its own and drop it.
        _lib().ERR_clear_error()
    return 1  # the authenticator verifies (verify_client_certificate)


_LIB: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        _LIB = _libssl()
    return _LIB


def _libssl() -> ctypes.CDLL:
    import _ssl
    lib = ctypes.CDLL(_ssl.__file__)  # dlsym on it finds libssl's symbols, the very library _ssl uses
    lib.ERR_clear_error.restype = None
    lib.ERR_clear_error.argtypes = []
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_set_verify.restype = None
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
    return lib


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The ``SSL_CTX *`` of a Python SSLContext (the first field after PyObject_HEAD), or None."""
    if sys.implementation.name != "cpython":
        return None
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    return ptr or None


def request_client_certificates(ctx: ssl.SSLContext) -> bool:
    """Make ``ctx`` (a server context with ``CERT_OPTIONAL``) ask for a client certificate and
    accept whichever comes; True when that is done, False when the TLS layer still verifies."""
    if ctx.verify_mode != ssl.CERT_OPTIONAL:
        raise ValueError("request_client_certificates needs a context with verify_mode CERT_OPTIONAL")
    try:
        lib = _lib()
        ptr = _ssl_ctx_pointer(ctx)
        if ptr is None or lib.SSL_CTX_get_verify_mode(ptr) != _SSL_VERIFY_PEER \
                or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
            raise OSError("the SSL_CTX found does not read back as this context")
        lib.SSL_CTX_set_verify(ptr, _SSL_VERIFY_PEER, _accept)
    except (OSError, AttributeError, ValueError) as e:
        log.warning("client certificates verified during the TLS handshake reason=%s "
                    "(a bad certificate fails the handshake instead of being answered 401)", e)
        return False
    return True


class CertificateRefused(Exception):
    """A client certificate the authenticator does not accept; ``str()`` says why."""


def verify_client_certificate(der: bytes, ca: x509.Certificate, *, now: dt.datetime | None = None) -> tuple[str, tuple[str, ...]]:
    """(user, groups) a client certificate names (CN, each O), once it is shown to be signed by
    the cluster CA, within its validity and meant for client authentication; else
    CertificateRefused with the reason (Go's x509 messages)."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise CertificateRefused(f"x509: malformed certificate: {e}") from None
    now = now or dt.datetime.now(dt.UTC)
    try:
        if cert.issuer != ca.subject:
            raise InvalidSignature
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateRefused("x509: certificate signed by unknown authority") from None
    if now < cert.not_valid_before_utc or now > cert.not_valid_after_utc:
        raise CertificateRefused(f"x509: certificate has expired or is not yet valid: current time "
                                 f"{now:%Y-%m-%dT%H:%M:%SZ} is after {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
                                 if now > cert.not_valid_after_utc else
                                 f"x509: certificate has expired or is not yet valid: current time "
                                 f"{now:%Y-%m-%dT%H:%M:%SZ} is before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}")
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages \
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        raise CertificateRefused("x509: certificate specifies an incompatible key usage")
    cn = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if not cn or not cn[0]:
        raise CertificateRefused("x509: certificate has no common name")
    return cn[0], tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
