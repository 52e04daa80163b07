"""A local registry server: Enhetsregisteret, Maskinporten's token endpoint and Folkeregisteret, with the
response shapes of the real services (see :mod:`orchestrator.registries.brreg`, ``.maskinporten`` and
``.folkeregisteret`` for the sources). One aiohttp application, configured through a
:class:`RegistriesSandbox` that may change at any time, even while serving.

``GET /enhetsregisteret/api/enheter/{orgnr}``
    ``200`` with the ``Enhet`` in ``state.organisations``; ``410`` with the removed unit's body
    (``organisasjonsnummer``, ``navn``, ``organisasjonsform``, ``slettedato``) for ``state.removed``; ``404``
    for any other nine digits; ``400`` when the number is not nine digits. Open, no authentication.
``POST /token``
    Maskinporten's JWT grant: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>``. The
    sandbox verifies the grant itself (it does not borrow the client's code): the issuer is a client added
    with :meth:`RegistriesSandbox.add_client`; the header names its key with ``kid`` (the registered key id)
    or ``x5c`` (a certificate holding the registered public key); the RS256/384/512 signature verifies with
    that key; ``aud`` is ``state.audience`` (default: the sandbox's own origin plus ``/``); ``iat`` is within
    ``max_clock_skew_s`` of ``state.clock()``; ``exp`` is later than now and at most 120 s after ``iat``;
    ``jti`` is not reused; no unknown claims; every scope is granted to the client. Answers
    ``{"access_token", "token_type": "Bearer", "expires_in", "scope"}``, or ``400`` with
    ``{"error": "invalid_grant" | "invalid_scope" | "invalid_client" | "unsupported_grant_type",
    "error_description"}``.
``GET /folkeregisteret/api/{package}/v1/personer/{fnr}`` (and ``/folkeregisteret/{package}/api/v1/...``)
    Requires ``Authorization: Bearer <token>`` issued by ``/token``, not expired by ``state.clock()`` (else
    ``401``), carrying ``state.folkeregisteret_scope`` when set and for a package in ``state.packages`` when
    set (else ``403``). ``200`` with the person document in ``state.persons`` reduced to the requested
    ``part`` parameters (``identifikasjonsnummer`` always included, as Skatteetaten does), ``404`` for an
    unknown person. Errors carry Skatteetaten's ``{"kode", "melding"}`` body (``FREG-001`` is the documented
    code for a failing service; the sandbox's ``FREG-401/403/404`` codes are its own).

Faults: :meth:`RegistriesSandbox.fail` answers a status (e.g. 503) to every route or to ``brreg``, ``token``
or ``folkeregisteret`` only; ``state.slow_s`` delays every answer (to exercise client timeouts).

What the sandbox saw is in ``state.requests`` as (route, method, status): never the path, which holds the
national id. Nothing here logs; the runner's access log is off. :func:`serve` runs it on 127.0.0.1, port 0.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from orchestrator.sandbox.server import serve_app

__all__ = [
    "GRANT_TYPE",
    "IssuedToken",
    "RecordedRequest",
    "RegistriesSandbox",
    "SandboxClient",
    "address_entry",
    "brreg_address",
    "create_app",
    "enhet",
    "generate_client_key",
    "person_document",
    "postadresse_fritt_format",
    "postboksadresse",
    "removed_enhet",
    "self_signed_certificate",
    "serve",
    "ukjent_bosted",
    "vegadresse",
]

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_GRANT_LIFETIME_S: Final = 120
_ALLOWED_CLAIMS: Final = frozenset({"aud", "iss", "scope", "iat", "exp", "jti", "resource", "consumer_org"})
_HASHES: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}
_ORGNR: Final = re.compile(r"[0-9]{9}")

Route = Literal["brreg", "token", "folkeregisteret"]


# ---------------------------------------------------------------------------------------------- keys


def generate_client_key(bits: int = 2048) -> tuple[bytes, bytes]:
    """A fresh RSA key pair for a Maskinporten client: (private key PEM, PKCS#8; public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def self_signed_certificate(private_key_pem: bytes, common_name: str, organisation_number: str) -> bytes:
    """A self-signed stand-in for a business certificate (PEM), valid for a day around now."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("a sandbox business certificate needs an RSA key")
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, organisation_number),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=12))
        .not_valid_after(now + timedelta(hours=12))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


# ------------------------------------------------------------------------------------ response builders


def brreg_address(
    lines: Sequence[str],
    postal_code: str,
    city: str,
    *,
    municipality: str = "OSLO",
    municipality_number: str = "0301",
    country: str = "Norge",
    country_code: str = "NO",
) -> dict[str, Any]:
    """An Enhetsregisteret ``Adresse``."""
    return {
        "land": country,
        "landkode": country_code,
        "postnummer": postal_code,
        "poststed": city,
        "adresse": list(lines),
        "kommune": municipality,
        "kommunenummer": municipality_number,
    }


def enhet(
    orgnr: str,
    name: str,
    *,
    forretningsadresse: Mapping[str, Any] | None = None,
    postadresse: Mapping[str, Any] | None = None,
    konkurs: bool = False,
    under_avvikling: bool = False,
    under_tvangsavvikling: bool = False,
    form: tuple[str, str] = ("AS", "Aksjeselskap"),
) -> dict[str, Any]:
    """An Enhetsregisteret ``Enhet`` as ``GET /enheter/{orgnr}`` answers it."""
    body: dict[str, Any] = {
        "organisasjonsnummer": orgnr,
        "navn": name,
        "organisasjonsform": {
            "kode": form[0],
            "beskrivelse": form[1],
            "_links": {
                "self": {"href": f"https://data.brreg.no/enhetsregisteret/api/organisasjonsformer/{form[0]}"}
            },
        },
        "registreringsdatoEnhetsregisteret": "2019-03-01",
        "registrertIMvaregisteret": True,
        "naeringskode1": {"kode": "62.010", "beskrivelse": "Programmeringstjenester"},
        "antallAnsatte": 4,
        "forretningsadresse": dict(forretningsadresse or brreg_address(["Storgata 1"], "0155", "OSLO")),
        "stiftelsesdato": "2019-02-15",
        "institusjonellSektorkode": {"kode": "2100", "beskrivelse": "Private aksjeselskaper mv."},
        "registrertIForetaksregisteret": True,
        "registrertIStiftelsesregisteret": False,
        "registrertIFrivillighetsregisteret": False,
        "konkurs": konkurs,
        "underAvvikling": under_avvikling,
        "underTvangsavviklingEllerTvangsopplosning": under_tvangsavvikling,
        "maalform": "Bokmål",
        "_links": {"self": {"href": f"https://data.brreg.no/enhetsregisteret/api/enheter/{orgnr}"}},
    }
    if postadresse is not None:
        body["postadresse"] = dict(postadresse)
    return body


def removed_enhet(
    orgnr: str, name: str, slettedato: str, form: tuple[str, str] = ("AS", "Aksjeselskap")
) -> dict[str, Any]:
    """The body Enhetsregisteret answers with ``410`` for a removed unit."""
    return {
        "organisasjonsnummer": orgnr,
        "navn": name,
        "organisasjonsform": {"kode": form[0], "beskrivelse": form[1]},
        "slettedato": slettedato,
        "_links": {"self": {"href": f"https://data.brreg.no/enhetsregisteret/api/enheter/{orgnr}"}},
    }


def _poststed(postal_code: str, city: str) -> dict[str, str]:
    return {"poststedsnavn": city, "postnummer": postal_code}


def vegadresse(
    street: str,
    house_number: str,
    postal_code: str,
    city: str,
    *,
    house_letter: str | None = None,
    municipality_number: str = "0301",
    care_of: str | None = None,
) -> dict[str, Any]:
    """A Folkeregisteret ``vegadresse``."""
    number: dict[str, str] = {"husnummer": house_number}
    if house_letter:
        number["husbokstav"] = house_letter
    value: dict[str, Any] = {
        "kommunenummer": municipality_number,
        "adressenavn": street,
        "adressenummer": number,
        "poststed": _poststed(postal_code, city),
    }
    if care_of:
        value["coAdressenavn"] = care_of
    return value


def postadresse_fritt_format(lines: Sequence[str], postal_code: str, city: str) -> dict[str, Any]:
    """A Folkeregisteret ``postadresseIFrittFormat``."""
    return {"adresselinje": list(lines), "poststed": _poststed(postal_code, city)}


def postboksadresse(box: str, postal_code: str, city: str, owner: str | None = None) -> dict[str, Any]:
    """A Folkeregisteret ``postboksadresse``."""
    value: dict[str, Any] = {"postboks": box, "poststed": _poststed(postal_code, city)}
    if owner:
        value["postbokseier"] = owner
    return value


def ukjent_bosted(municipality_number: str = "0301") -> dict[str, Any]:
    return {"bostedskommune": municipality_number}


def address_entry(
    kind: str, value: Mapping[str, Any], *, current: bool = True, grading: str = "ugradert"
) -> dict[str, Any]:
    """One entry of ``postadresse`` / ``bostedsadresse``: ``kind`` is ``vegadresse``,
    ``postadresseIFrittFormat``, ``postboksadresse``, ``matrikkeladresse`` or ``ukjentBosted``."""
    return {
        "ajourholdstidspunkt": "2024-05-02T10:11:12+02:00",
        "erGjeldende": current,
        "kilde": "Folkeregisteret",
        "gyldighetstidspunkt": "2024-05-01T00:00:00+02:00",
        "adressegradering": grading,
        kind: dict(value),
    }


def person_document(
    fnr: str,
    *,
    postadresse: Iterable[Mapping[str, Any]] = (),
    bostedsadresse: Iterable[Mapping[str, Any]] = (),
    name: tuple[str, str] = ("SANDBOX", "PERSON"),
) -> dict[str, Any]:
    """A Folkeregisteret person document (the parts the orchestrator asks for, and a few more)."""
    document: dict[str, Any] = {
        "identifikasjonsnummer": [
            {
                "ajourholdstidspunkt": "2019-06-05T09:33:23+02:00",
                "erGjeldende": True,
                "kilde": "dsf-folkeregister-synkronisering",
                "status": "iBruk",
                "foedselsEllerDNummer": fnr,
                "identifikatortype": "foedselsnummer",
            }
        ],
        "status": [{"erGjeldende": True, "status": "bosatt"}],
        "navn": [{"erGjeldende": True, "fornavn": name[0], "etternavn": name[1]}],
    }
    entries = list(postadresse)
    if entries:
        document["postadresse"] = [dict(entry) for entry in entries]
    residences = list(bostedsadresse)
    if residences:
        document["bostedsadresse"] = [dict(entry) for entry in residences]
    return document


# ----------------------------------------------------------------------------------------------- state


@dataclass
class SandboxClient:
    """A Maskinporten client: its id, the public key its grants are signed with, and its scopes."""

    client_id: str
    public_key: rsa.RSAPublicKey
    scopes: frozenset[str]
    key_id: str | None = None  # a grant naming its key with kid must give this one


@dataclass(frozen=True)
class IssuedToken:
    client_id: str
    scopes: frozenset[str]
    expires_at: float


@dataclass(frozen=True)
class RecordedRequest:
    route: str  # "brreg", "token", "folkeregisteret" or "unknown"; never the path
    method: str
    status: int


@dataclass
class RegistriesSandbox:
    """The registries' content, the Maskinporten clients, faults, and everything the sandbox saw."""

    organisations: dict[str, dict[str, Any]] = field(default_factory=dict)  # orgnr → Enhet (200)
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)  # orgnr → removed unit body (410)
    persons: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)  # fnr → person document
    clients: dict[str, SandboxClient] = field(default_factory=dict)
    audience: str | None = None  # None: the sandbox's origin plus "/"
    token_lifetime_s: int = 120
    max_clock_skew_s: float = 10.0
    folkeregisteret_scope: str | None = None  # the scope a person look-up needs (None: any token)
    packages: frozenset[str] | None = None  # rights packages served (None: any)
    clock: Callable[[], float] = time.time
    fail_status: int | None = None
    fail_routes: frozenset[str] | None = None  # None: every route
    slow_s: float = 0.0

    tokens: dict[str, IssuedToken] = field(default_factory=dict, repr=False)
    used_jti: set[str] = field(default_factory=set, repr=False)
    requests: list[RecordedRequest] = field(default_factory=list)
    rejected_grants: list[tuple[str, str]] = field(default_factory=list)  # (error, description)

    _closing: asyncio.Event | None = field(default=None, repr=False)

    def add_organisation(self, body: Mapping[str, Any]) -> None:
        orgnr = str(body["organisasjonsnummer"])
        self.removed.pop(orgnr, None)
        self.organisations[orgnr] = dict(body)

    def remove_organisation(self, orgnr: str, name: str, slettedato: str = "2024-06-01") -> None:
        self.organisations.pop(orgnr, None)
        self.removed[orgnr] = removed_enhet(orgnr, name, slettedato)

    def add_person(self, fnr: str, document: Mapping[str, Any]) -> None:
        self.persons[fnr] = dict(document)

    def add_client(
        self,
        client_id: str,
        public_key_pem: bytes | str,
        scopes: Iterable[str],
        key_id: str | None = None,
    ) -> None:
        pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("a Maskinporten client key is an RSA key")
        self.clients[client_id] = SandboxClient(client_id, key, frozenset(scopes), key_id)

    def fail(self, status: int | None, *routes: Route) -> None:
        """Answer ``status`` (None: stop failing) to every request, or to the given routes only."""
        self.fail_status = status
        self.fail_routes = frozenset(routes) if routes else None

    def count(self, route: Route, status: int | None = None) -> int:
        return sum(1 for r in self.requests if r.route == route and (status is None or r.status == status))

    async def _pause(self, seconds: float) -> None:
        closing = self._closing
        if closing is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), seconds)


STATE = web.AppKey("registries_sandbox", RegistriesSandbox)


# --------------------------------------------------------------------------------------------- helpers


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _freg_error(status: int, code: str, message: str) -> web.Response:
    return _json({"kode": code, "melding": message}, status)


def _route_name(request: web.Request) -> str:
    name = request.match_info.route.name
    if name is None:
        return "unknown"
    return "folkeregisteret" if name.startswith("folkeregisteret") else name


@web.middleware
async def _gate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    route = _route_name(request)
    response: web.StreamResponse
    if state.slow_s > 0:
        await state._pause(state.slow_s)
    if state.fail_status is not None and (state.fail_routes is None or route in state.fail_routes):
        if route == "folkeregisteret":
            response = _freg_error(
                state.fail_status, "FREG-001", "Feil i tjenesten. Vennligst prøv igjen seinere."
            )
        else:
            response = _json({"error": "server_error", "status": state.fail_status}, state.fail_status)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            state.requests.append(RecordedRequest(route, request.method, exc.status))
            raise
    state.requests.append(RecordedRequest(route, request.method, response.status))
    return response


# ------------------------------------------------------------------------------------- Enhetsregisteret


async def _enhet(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    orgnr = request.match_info["orgnr"]
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    if _ORGNR.fullmatch(orgnr) is None:
        return _json(
            {
                "timestamp": now,
                "status": 400,
                "error": "Bad Request",
                "message": "Ugyldig organisasjonsnummer",
                "path": request.path,
            },
            400,
        )
    if orgnr in state.organisations:
        return _json(state.organisations[orgnr])
    if orgnr in state.removed:
        return _json(state.removed[orgnr], 410)
    return _json(
        {
            "timestamp": now,
            "status": 404,
            "error": "Not Found",
            "message": "Ingen enhet funnet",
            "path": request.path,
        },
        404,
    )


# ------------------------------------------------------------------------------------------ Maskinporten


class _GrantError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _b64url_decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _GrantError("invalid_grant", "Invalid assertion. Malformed JWT.") from exc


def _json_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(part))
    except ValueError as exc:
        raise _GrantError("invalid_grant", "Invalid assertion. Malformed JWT.") from exc
    if not isinstance(value, dict):
        raise _GrantError("invalid_grant", "Invalid assertion. Malformed JWT.")
    return value


def _signing_key(header: Mapping[str, Any], client: SandboxClient) -> rsa.RSAPublicKey:
    """The key the grant must verify with: the client's, if the header names it by kid or by certificate."""
    if "kid" in header:
        if client.key_id is None or header["kid"] != client.key_id:
            raise _GrantError(
                "invalid_grant", "Invalid assertion. Client authentication failed. Unknown kid."
            )
        return client.public_key
    chain = header.get("x5c")
    if isinstance(chain, list) and chain and isinstance(chain[0], str):
        try:
            certificate = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise _GrantError("invalid_grant", "Invalid assertion. Invalid x5c certificate.") from exc
        public = certificate.public_key()
        if (
            not isinstance(public, rsa.RSAPublicKey)
            or public.public_numbers() != client.public_key.public_numbers()
        ):
            raise _GrantError(
                "invalid_grant", "Invalid assertion. Client authentication failed. Invalid certificate."
            )
        return public
    raise _GrantError("invalid_grant", "Invalid assertion. Either kid or x5c must be present.")


def _verify_grant(
    state: RegistriesSandbox, assertion: str, audience: str
) -> tuple[SandboxClient, frozenset[str]]:
    parts = assertion.split(".")
    if len(parts) != 3:
        raise _GrantError("invalid_grant", "Invalid assertion. Malformed JWT.")
    header, claims = _json_part(parts[0]), _json_part(parts[1])
    algorithm = _HASHES.get(str(header.get("alg")))
    if algorithm is None:
        raise _GrantError("invalid_grant", "Invalid assertion. Unsupported alg.")
    client = state.clients.get(str(claims.get("iss")))
    if client is None:
        raise _GrantError(
            "invalid_client", "Invalid assertion. Client authentication failed. Unknown client."
        )
    key = _signing_key(header, client)
    try:
        key.verify(
            _b64url_decode(parts[2]),
            f"{parts[0]}.{parts[1]}".encode("ascii"),
            padding.PKCS1v15(),
            algorithm(),
        )
    except (InvalidSignature, UnicodeEncodeError) as exc:
        raise _GrantError(
            "invalid_grant", "Invalid assertion. Client authentication failed. Bad signature."
        ) from exc
    unknown = set(claims) - _ALLOWED_CLAIMS
    if unknown:
        raise _GrantError(
            "invalid_grant", f"Invalid assertion. Unknown claims: {', '.join(sorted(unknown))}."
        )
    if claims.get("aud") != audience:
        raise _GrantError(
            "invalid_grant", "Invalid assertion. Client authentication failed. Invalid JWT claim aud."
        )
    now = state.clock()
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise _GrantError("invalid_grant", "Invalid assertion. iat and exp are required.")
    if abs(iat - now) > state.max_clock_skew_s:
        raise _GrantError("invalid_grant", "Invalid assertion. Invalid JWT claim iat (clock skew).")
    if exp <= now:
        raise _GrantError("invalid_grant", "Invalid assertion. The JWT has expired.")
    if exp - iat > MAX_GRANT_LIFETIME_S:
        raise _GrantError("invalid_grant", "Invalid assertion. exp - iat exceeds 120 seconds.")
    jti = claims.get("jti")
    if jti is not None:
        if str(jti) in state.used_jti:
            raise _GrantError("invalid_grant", "Invalid assertion. The JWT has been used before (jti).")
        state.used_jti.add(str(jti))
    scope = claims.get("scope")
    if not isinstance(scope, str) or not scope.split():
        raise _GrantError("invalid_scope", "Missing scope.")
    scopes = frozenset(scope.split())
    if not scopes <= client.scopes:
        raise _GrantError("invalid_scope", "The client is not allowed the requested scope.")
    return client, scopes


async def _token(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    form = await request.post()
    grant_type, assertion = form.get("grant_type"), form.get("assertion")
    audience = state.audience or f"{request.url.origin()}/"
    try:
        if grant_type != GRANT_TYPE:
            raise _GrantError("unsupported_grant_type", "Unsupported grant_type.")
        if not isinstance(assertion, str) or not assertion:
            raise _GrantError("invalid_request", "Missing assertion.")
        client, scopes = _verify_grant(state, assertion, audience)
    except _GrantError as exc:
        state.rejected_grants.append((exc.error, exc.description))
        return _json({"error": exc.error, "error_description": exc.description}, 400)
    value = secrets.token_urlsafe(32)
    state.tokens[value] = IssuedToken(client.client_id, scopes, state.clock() + state.token_lifetime_s)
    return _json(
        {
            "access_token": value,
            "token_type": "Bearer",
            "expires_in": state.token_lifetime_s,
            "scope": " ".join(sorted(scopes)),
        }
    )


# ----------------------------------------------------------------------------------------- Folkeregisteret


async def _person(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    token = state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
    if token is None or token.expires_at <= state.clock():
        return _freg_error(401, "FREG-401", "Autentiseringsinformasjon mangler")
    package = request.match_info["package"]
    if (state.folkeregisteret_scope is not None and state.folkeregisteret_scope not in token.scopes) or (
        state.packages is not None and package not in state.packages
    ):
        return _freg_error(403, "FREG-403", "Virksomheten mangler autorisasjon for den angitte tjenesten")
    document = state.persons.get(request.match_info["fnr"])
    if document is None:
        return _freg_error(404, "FREG-404", "Fant ikke person")
    parts = request.query.getall("part", [])
    if parts:
        document = {
            key: value for key, value in document.items() if key in parts or key == "identifikasjonsnummer"
        }
    return _json(document)


# ------------------------------------------------------------------------------------------ app, run


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state._closing = asyncio.Event()
    try:
        yield
    finally:
        state._closing.set()


async def _on_shutdown(app: web.Application) -> None:
    closing = app[STATE]._closing
    if closing is not None:
        closing.set()


def create_app(state: RegistriesSandbox) -> web.Application:
    """The sandbox as an aiohttp application (routes in the module docstring)."""
    app = web.Application(middlewares=[_gate])
    app[STATE] = state
    app.router.add_get("/enhetsregisteret/api/enheter/{orgnr}", _enhet, name="brreg")
    app.router.add_post("/token", _token, name="token")
    app.router.add_get("/folkeregisteret/api/{package}/v1/personer/{fnr}", _person, name="folkeregisteret")
    app.router.add_get(
        "/folkeregisteret/{package}/api/v1/personer/{fnr}", _person, name="folkeregisteret_with_api"
    )
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_on_shutdown)
    return app


@contextlib.asynccontextmanager
async def serve(state: RegistriesSandbox, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the sandbox on ``host:port`` (0: a free port) and yield its base URL, e.g.
    ``http://127.0.0.1:4711``. Enhetsregisteret is at ``<url>/enhetsregisteret/api``, Maskinporten's token
    endpoint at ``<url>/token`` (audience ``<url>/``), Folkeregisteret at ``<url>``."""
    async with serve_app(create_app(state), host=host, port=port) as url:
        yield url
