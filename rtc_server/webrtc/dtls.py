"""DTLS interop: accept the RSA certificates of GStreamer and other stacks, and say why
a peer's certificate cannot be accepted when that is the reason a handshake fails.

aiortc builds one pyOpenSSL context per DTLS transport in
``RTCCertificate._create_ssl_context`` with a fixed cipher list of ECDHE-**ECDSA** suites
only. That is enough when the peer is the DTLS client (the server's certificate is ours,
ECDSA P-256), but when aiortc is the DTLS client — it answers an offer's ``actpass`` or
``passive`` with ``active``, which is every WHIP session and every browser ``/offer`` — the
cipher suite must match the *peer's* certificate. GStreamer's webrtcbin (1.22) presents an
RSA-2048 certificate, so the handshake ends with "no shared cipher".

``use_dtls_interop()`` (installed once by the composition root, before any peer
connection exists) wraps that method and, on the context aiortc built:

* appends the ECDHE-**RSA** AEAD suites (AES-128-GCM, ChaCha20-Poly1305) after aiortc's
  ECDSA ones. They are the RSA counterparts of suites aiortc already offers — forward
  secret, AEAD — so no peer gets a weaker channel than before: an ECDSA peer still
  negotiates exactly what it did, and OpenSSL's default signature algorithms already list
  RSA-PSS and PKCS#1 v1.5 with SHA-256 and up. aiortc's legacy CBC suites are left as they
  are; no RSA CBC suite is added.
* installs a certificate callback that still accepts every certificate (as aiortc's does:
  the peer is authenticated by the SDP fingerprint, checked after the handshake) but logs
  one clear warning when the peer's key is an elliptic curve that the OpenSSL in use cannot
  negotiate in (D)TLS. The case in the wild: FFmpeg built with GnuTLS — the FFmpeg inside
  the PyAV wheel, and Debian's — generates its WHIP/DTLS certificate with
  ``gnutls_sec_param_to_pk_bits(GNUTLS_PK_ECDSA, GNUTLS_SEC_PARAM_MEDIUM)``, i.e. on
  P-224. For (D)TLS 1.2 a client must refuse a server key whose curve is not one of its
  own supported groups (RFC 8422 §5.1, OpenSSL's ``tls12_check_peer_sigalg``:
  ``illegal_parameter`` / ``wrong curve``), and OpenSSL 4.0 — what the ``cryptography``
  wheels bundle since 47 — has P-224 and the other RFC 8422-deprecated curves compiled out
  of TLS (``SSL_CTX_set1_curves_list(ctx, b"secp224r1")`` fails). Without the warning the
  only trace is aiortc's "DTLS handshake failed" with an empty OpenSSL error. The remedy is
  on the client side: give FFmpeg a P-256 certificate (``cert_file``/``key_file``; docs/sources.md,
  "WHIP ingest"). docs/whip.md has the measurements behind this.

Tested against aiortc 1.16.0 (setup.cfg pins it); ``use_dtls_interop`` refuses any other
version, because it replaces a private method whose shape it relies on.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc.rtcdtlstransport import RTCCertificate, SRTPProtectionProfile
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

log = logging.getLogger(__name__)

#: The aiortc release whose ``RTCCertificate._create_ssl_context`` this wraps.
TESTED_AIORTC = "1.16.0"

#: aiortc 1.16.0's own list (ECDHE-ECDSA only), kept first and unchanged.
AIORTC_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)
#: What is added: the RSA-certificate counterparts of aiortc's AEAD suites.
RSA_CIPHERS = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305"
CIPHERS = f"{AIORTC_CIPHERS}:{RSA_CIPHERS}"

#: Curves every OpenSSL 3/4 (D)TLS 1.2 client accepts for a peer's ECDSA key (RFC 8422
#: non-deprecated groups). A peer key on any other curve makes the handshake fail.
USABLE_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})

#: Peer certificate keys seen, process-wide (``"RSA 2048"``, ``"EC secp256r1"``): for logs and tests.
PEER_KEYS: Counter[str] = Counter()

#: Connections already diagnosed: OpenSSL may call the callback more than once per certificate.
_diagnosed: weakref.WeakSet[SSL.Connection] = weakref.WeakSet()

_CreateContext = Callable[[RTCCertificate, list[SRTPProtectionProfile]], SSL.Context]
_original_create_ssl_context: _CreateContext = RTCCertificate._create_ssl_context


def describe_key(certificate: crypto.X509) -> str:
    """``"EC secp224r1"``, ``"RSA 2048"``, ... for logs."""
    key = certificate.to_cryptography().public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    size = getattr(key, "key_size", None)
    return f"{type(key).__name__.removesuffix('PublicKey').removeprefix('_')} {size or ''}".strip()


def unusable_curve(certificate: crypto.X509) -> str | None:
    """The curve name if ``certificate`` has an EC key this (D)TLS stack cannot accept."""
    key = certificate.to_cryptography().public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in USABLE_CURVES:
        return key.curve.name
    return None


def _accept_and_diagnose(connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int,
                         ok: int) -> bool:
    """aiortc's policy (accept: the SDP fingerprint is checked after the handshake), plus a
    warning when the peer's certificate is one the handshake is about to refuse."""
    if depth == 0 and connection not in _diagnosed:
        _diagnosed.add(connection)
        PEER_KEYS[describe_key(certificate)] += 1
        curve = unusable_curve(certificate)
        if curve is not None:
            log.warning(
                "the peer's DTLS certificate uses the elliptic curve %s, which the OpenSSL in use cannot "
                "negotiate in DTLS 1.2 (usable: %s): the handshake will fail with illegal_parameter. "
                "FFmpeg built with GnuTLS (the PyAV wheel's, Debian's) makes such certificates by default: "
                "give it a P-256 certificate with the WHIP muxer's cert_file/key_file options",
                curve, ", ".join(sorted(USABLE_CURVES)))
        else:
            log.debug("peer DTLS certificate: %s", describe_key(certificate))
    return True


def _create_ssl_context(self: RTCCertificate, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
    ctx = _original_create_ssl_context(self, srtp_profiles)
    ctx.set_cipher_list(CIPHERS.encode("ascii"))
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_and_diagnose)
    return ctx


def use_dtls_interop(enabled: bool = True) -> None:
    """Install (or with ``False`` remove) the adjustments above, process-wide.

    Raises ``RuntimeError`` on an aiortc other than ``TESTED_AIORTC``: the wrapped method
    is private and its replacement must be re-checked against each release.
    """
    if enabled and aiortc.__version__ != TESTED_AIORTC:
        raise RuntimeError(f"rtc_server.webrtc.dtls was tested with aiortc {TESTED_AIORTC}, this is "
                           f"{aiortc.__version__}: re-check RTCCertificate._create_ssl_context, then update "
                           "TESTED_AIORTC")
    method: Any = _create_ssl_context if enabled else _original_create_ssl_context
    RTCCertificate._create_ssl_context = method  # type: ignore[method-assign]


def dtls_interop_active() -> bool:
    return RTCCertificate._create_ssl_context is _create_ssl_context
