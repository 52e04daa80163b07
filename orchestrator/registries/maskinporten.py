"""Maskinporten access tokens (server-to-server OAuth2 with a JWT grant, RFC 7523), as Folkeregisteret needs.

The client signs a JWT grant with the business certificate's key (``virksomhetssertifikat``) and POSTs it
to the token endpoint (Digdir, "Maskinporten: JWT grant" and "/token endpoint"):

``POST {token_url}``, ``application/x-www-form-urlencoded``:
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<the grant>``

The grant is ``base64url(header).base64url(claims).base64url(signature)``, signed RS256:

- header: ``alg`` and exactly one of ``kid`` (a key registered with the client) or ``x5c`` (the full
  certificate chain, standard base64 DER, leaf first, RFC 7517 § 4.7);
- claims: ``aud`` (Maskinporten's issuer identifier, ``https://maskinporten.no/`` in production,
  ``https://test.maskinporten.no/`` in test), ``iss`` (our client id), ``scope`` (space separated),
  ``iat``, ``exp`` (at most 120 s after ``iat``), ``jti`` (unique: a grant cannot be reused), and ``resource``
  (an array) only when the API asks for it. Maskinporten refuses claims it does not know.

The answer is ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``; errors are
``{"error", "error_description"}`` (``invalid_grant``, ``invalid_scope``, ``invalid_client`` ...).

:class:`MaskinportenClient` caches the token until ``refresh_margin_s`` before it expires, then fetches a new
one; concurrent callers share one fetch. Neither the grant, the key nor the token is ever logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from orchestrator.registries import (
    RegistryConfigurationError,
    TransientRegistryError,
    error_for_status,
)

__all__ = [
    "GRANT_TYPE",
    "MAX_GRANT_LIFETIME_S",
    "PRODUCTION_AUDIENCE",
    "PRODUCTION_TOKEN_URL",
    "TEST_AUDIENCE",
    "TEST_TOKEN_URL",
    "MaskinportenClient",
    "build_grant",
    "load_certificate_chain",
    "load_private_key",
]

log = logging.getLogger(__name__)

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PRODUCTION_TOKEN_URL: Final = "https://maskinporten.no/token"  # noqa: S105 (a URL, not a secret)
PRODUCTION_AUDIENCE: Final = "https://maskinporten.no/"
TEST_TOKEN_URL: Final = "https://test.maskinporten.no/token"  # noqa: S105
TEST_AUDIENCE: Final = "https://test.maskinporten.no/"
MAX_GRANT_LIFETIME_S: Final = 120

PemSource = SecretStr | Path | str | bytes


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pem_bytes(source: PemSource) -> bytes:
    """PEM from a secret (the text), a path (the file's content), or the text/bytes themselves."""
    if isinstance(source, SecretStr):
        return source.get_secret_value().encode("utf-8")
    if isinstance(source, Path):
        return source.read_bytes()
    return source.encode("utf-8") if isinstance(source, str) else source


def load_private_key(source: PemSource, password: SecretStr | None = None) -> rsa.RSAPrivateKey:
    """The RSA private key in ``source`` (PEM, PKCS#1 or PKCS#8, optionally encrypted with ``password``)."""
    secret = password.get_secret_value().encode("utf-8") if password is not None else None
    try:
        key = serialization.load_pem_private_key(_pem_bytes(source), password=secret)
    except (ValueError, TypeError) as exc:
        # The message of cryptography's error never contains key material; keep ours generic anyway.
        raise ValueError("the Maskinporten private key could not be read (PEM, right password?)") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the Maskinporten private key must be an RSA key (RS256)")
    return key


def load_certificate_chain(source: Path | str | bytes | Sequence[bytes]) -> list[x509.Certificate]:
    """The certificates in ``source`` (PEM; a file, text, bytes, or one PEM per item), leaf first."""
    blobs = [_pem_bytes(source)] if isinstance(source, Path | str | bytes) else list(source)
    certificates = [cert for blob in blobs for cert in x509.load_pem_x509_certificates(blob)]
    if not certificates:
        raise ValueError("the certificate chain is empty")
    return certificates


def build_grant(
    key: rsa.RSAPrivateKey,
    *,
    client_id: str,
    scope: str,
    audience: str,
    now: float,
    lifetime_s: int = 60,
    key_id: str | None = None,
    certificate_chain: Sequence[x509.Certificate] = (),
    resource: Sequence[str] = (),
    jti: str | None = None,
) -> str:
    """A signed Maskinporten JWT grant (compact serialisation), issued at ``now`` (UNIX seconds, UTC)."""
    if (key_id is None) == (not certificate_chain):
        raise ValueError("a Maskinporten grant names its key with exactly one of kid or x5c")
    if not 0 < lifetime_s <= MAX_GRANT_LIFETIME_S:
        raise ValueError(f"a Maskinporten grant lives at most {MAX_GRANT_LIFETIME_S} s")
    header: dict[str, Any] = {"alg": "RS256"}
    if key_id is not None:
        header["kid"] = key_id
    else:
        header["x5c"] = [
            base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for cert in certificate_chain
        ]
    issued = int(now)
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": client_id,
        "scope": scope,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": jti or str(uuid.uuid4()),
    }
    if resource:
        claims["resource"] = list(resource)
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode("utf-8")) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _same_key(certificate: x509.Certificate, key: rsa.RSAPrivateKey) -> bool:
    public = certificate.public_key()
    ours = key.public_key().public_numbers()
    return isinstance(public, rsa.RSAPublicKey) and public.public_numbers() == ours


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    expires_at: float
    refresh_at: float


class MaskinportenClient:
    """Fetches and caches Maskinporten access tokens for one client id and scope.

    ``private_key`` is the PEM text as a ``SecretStr`` or a path to the PEM file. Name the key with exactly
    one of ``key_id`` (a key registered with the client) or ``certificate_chain`` (the business certificate
    chain, PEM, leaf first; sent as ``x5c``). ``clock`` returns UNIX seconds; it dates the grants and ages
    the token.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str,
        scope: str,
        private_key: SecretStr | Path,
        audience: str,
        key_id: str | None = None,
        certificate_chain: Path | str | bytes | Sequence[bytes] | None = None,
        private_key_password: SecretStr | None = None,
        resource: Sequence[str] = (),
        grant_lifetime_s: int = 60,
        refresh_margin_s: float = 30.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not scope or not audience or not token_url:
            raise ValueError("Maskinporten needs a token URL, a client id, a scope and an audience")
        chain = load_certificate_chain(certificate_chain) if certificate_chain is not None else []
        if (key_id is None) == (not chain):
            raise ValueError("give Maskinporten exactly one of key_id or certificate_chain")
        self._key = load_private_key(private_key, private_key_password)
        if chain and not _same_key(chain[0], self._key):
            raise ValueError("the first certificate of the chain does not belong to the private key")
        if not 0 < grant_lifetime_s <= MAX_GRANT_LIFETIME_S:
            raise ValueError(f"grant_lifetime_s must be 1-{MAX_GRANT_LIFETIME_S}")
        self.session = session
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.audience = audience
        self._key_id = key_id
        self._chain = chain
        self._resource = tuple(resource)
        self._grant_lifetime_s = grant_lifetime_s
        self._refresh_margin_s = refresh_margin_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many tokens this client fetched (for metrics and tests)

    def __repr__(self) -> str:
        return f"MaskinportenClient(client_id={self.client_id!r}, scope={self.scope!r})"

    def build_grant(self) -> str:
        """A fresh signed grant, dated by the client's clock."""
        return build_grant(
            self._key,
            client_id=self.client_id,
            scope=self.scope,
            audience=self.audience,
            now=self._clock(),
            lifetime_s=self._grant_lifetime_s,
            key_id=self._key_id,
            certificate_chain=self._chain,
            resource=self._resource,
        )

    def _fresh(self) -> _Token | None:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token
        return None

    async def access_token(self) -> str:
        """A valid access token: the cached one, or a new one when it is about to expire."""
        token = self._fresh()
        if token is not None:
            return token.value
        async with self._lock:
            token = self._fresh()  # another caller may have refreshed it while we waited
            if token is None:
                token = await self._fetch()
                self._token = token
            return token.value

    async def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {await self.access_token()}"

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is ``token``, when given): the API refused it."""
        if self._token is not None and (token is None or self._token.value == token):
            self._token = None

    async def _fetch(self) -> _Token:
        grant = self.build_grant()
        self.fetches += 1
        try:
            async with self.session.post(
                self.token_url,
                data={"grant_type": GRANT_TYPE, "assertion": grant},
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            ) as response:
                status = response.status
                try:
                    body: Any = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = None
                retry_after = response.headers.get("Retry-After")
        except TimeoutError as exc:
            raise TransientRegistryError(
                "maskinporten_timeout", f"Maskinporten did not answer within {self._timeout_s} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransientRegistryError(
                "maskinporten_unreachable", f"Maskinporten unreachable ({type(exc).__name__})"
            ) from exc
        log.debug("maskinporten token request: HTTP %s", status)
        if status == 200:
            return self._token_from(body)
        if status in (400, 401, 403) and isinstance(body, Mapping) and isinstance(body.get("error"), str):
            error = str(body["error"])[:64]
            description = str(body.get("error_description") or "")[:300]
            raise RegistryConfigurationError(
                f"maskinporten_{error}", f"Maskinporten refused the grant: {error} {description}".strip()
            )
        raise error_for_status("maskinporten", status, retry_after)

    def _token_from(self, body: Any) -> _Token:
        if not isinstance(body, Mapping):
            raise TransientRegistryError(
                "maskinporten_malformed_response", "Maskinporten answered 200 without JSON"
            )
        value = body.get("access_token")
        expires_in = body.get("expires_in")
        token_type = body.get("token_type", "Bearer")
        if (
            not isinstance(value, str)
            or not value
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or expires_in <= 0
        ):
            raise TransientRegistryError(
                "maskinporten_malformed_response", "Maskinporten's answer lacks access_token or expires_in"
            )
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise RegistryConfigurationError(
                "maskinporten_token_type", "Maskinporten issued a token that is not a Bearer token"
            )
        now = self._clock()
        lifetime = float(expires_in)
        margin = min(self._refresh_margin_s, lifetime / 2)
        return _Token(value=value, expires_at=now + lifetime, refresh_at=now + lifetime - margin)
