"""Maskinporten and Folkeregisteret against the registry sandbox: a real HTTP server on 127.0.0.1, port 0,
that verifies every JWT grant with the client's public key and requires the Bearer token it issued.

A graded address (R9) must never reach the result, a log line or an exception; neither may the national id.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from orchestrator.identifiers import mod11_check_digit, validate_national_id
from orchestrator.registries import (
    PermanentRegistryError,
    RegistryAddress,
    RegistryConfigurationError,
    RegistryError,
    TransientRegistryError,
)
from orchestrator.registries.folkeregisteret import (
    PersonAddressResult,
    address_from_person,
    lookup_person,
    person_path,
)
from orchestrator.registries.maskinporten import (
    MAX_GRANT_LIFETIME_S,
    MaskinportenClient,
    build_grant,
    load_private_key,
)
from orchestrator.sandbox.registries import (
    RegistriesSandbox,
    address_entry,
    generate_client_key,
    person_document,
    postadresse_fritt_format,
    postboksadresse,
    self_signed_certificate,
    serve,
    ukjent_bosted,
    vegadresse,
)


def national_id(day: int, month: int, yy: int) -> str:
    """A valid synthetic national id (month + 80, Skatteetaten's test ids)."""
    for individual in range(500, 1000):
        base = f"{day:02d}{month + 80:02d}{yy:02d}{individual:03d}"
        k1 = mod11_check_digit(base, (3, 7, 6, 1, 8, 9, 4, 5, 2))
        if k1 is None:
            continue
        k2 = mod11_check_digit(base + str(k1), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        if k2 is None:
            continue
        return validate_national_id(f"{base}{k1}{k2}")
    raise AssertionError("no valid id")  # pragma: no cover


POSTAL = national_id(12, 3, 85)  # a current free-format postadresse
PO_BOX = national_id(2, 4, 71)  # a PO box
RESIDENCE = national_id(1, 7, 90)  # only a bostedsadresse
HISTORIC = national_id(5, 5, 66)  # an old (not current) postadresse and a current bostedsadresse
FORTROLIG = national_id(30, 11, 72)  # a fortrolig bostedsadresse beside an ugradert postadresse
STRENGT = national_id(14, 2, 80)  # strengtFortrolig
OLD_GRADING = national_id(9, 9, 99)  # a graded address that is no longer current
UNKNOWN_RESIDENCE = national_id(21, 6, 77)  # ukjentBosted, no postal address
NOBODY = national_id(3, 3, 93)  # not in the register
EVERY_ID = (POSTAL, PO_BOX, RESIDENCE, HISTORIC, FORTROLIG, STRENGT, OLD_GRADING, UNKNOWN_RESIDENCE, NOBODY)

SECRET_STREET = "Hemmeligveien"  # the graded addresses' street: must never be seen anywhere
CLIENT_ID = "5ba7c2e4-sandbox-client"
SCOPE = "skatteetaten:folkeregisteret"
KID = "orchestrator-key-1"
PACKAGE = "privat"


class Clock:
    """An injected clock (UNIX seconds) shared by the client and the sandbox."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Keys:
    private: bytes
    public: bytes


@pytest.fixture(scope="module")
def keys() -> Keys:
    private, public = generate_client_key()
    return Keys(private, public)


@pytest.fixture(scope="module")
def other_keys() -> Keys:
    private, public = generate_client_key()
    return Keys(private, public)


def _people(state: RegistriesSandbox) -> None:
    home = vegadresse("Storgata", "12", "0155", "OSLO", house_letter="B")
    state.add_person(
        POSTAL,
        person_document(
            POSTAL,
            postadresse=[
                address_entry(
                    "postadresseIFrittFormat",
                    postadresse_fritt_format(["Gate 22255"], "9170", "LONGYEARBYEN"),
                )
            ],
            bostedsadresse=[address_entry("vegadresse", home)],
        ),
    )
    state.add_person(
        PO_BOX,
        person_document(
            PO_BOX,
            postadresse=[
                address_entry("postboksadresse", postboksadresse("123", "0102", "OSLO", owner="Ola Nordmann"))
            ],
            bostedsadresse=[address_entry("vegadresse", home)],
        ),
    )
    state.add_person(
        RESIDENCE, person_document(RESIDENCE, bostedsadresse=[address_entry("vegadresse", home)])
    )
    state.add_person(
        HISTORIC,
        person_document(
            HISTORIC,
            postadresse=[
                address_entry(
                    "postadresseIFrittFormat",
                    postadresse_fritt_format(["Gammelveien 1"], "5003", "BERGEN"),
                    current=False,
                )
            ],
            bostedsadresse=[
                address_entry("vegadresse", vegadresse("Gammelveien", "1", "5003", "BERGEN"), current=False),
                address_entry("vegadresse", home),
            ],
        ),
    )
    secret = vegadresse(SECRET_STREET, "7", "9990", "BÅTSFJORD")
    state.add_person(
        FORTROLIG,
        person_document(
            FORTROLIG,
            postadresse=[address_entry("postboksadresse", postboksadresse("55", "0102", "OSLO"))],
            bostedsadresse=[address_entry("vegadresse", secret, grading="fortrolig")],
        ),
    )
    state.add_person(
        STRENGT,
        person_document(
            STRENGT, postadresse=[address_entry("vegadresse", secret, grading="strengtFortrolig")]
        ),
    )
    state.add_person(
        OLD_GRADING,
        person_document(
            OLD_GRADING,
            bostedsadresse=[
                address_entry("vegadresse", secret, grading="fortrolig", current=False),
                address_entry("vegadresse", home),
            ],
        ),
    )
    state.add_person(
        UNKNOWN_RESIDENCE,
        person_document(UNKNOWN_RESIDENCE, bostedsadresse=[address_entry("ukjentBosted", ukjent_bosted())]),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def registry(keys: Keys, clock: Clock) -> AsyncIterator[tuple[RegistriesSandbox, str]]:
    state = RegistriesSandbox(clock=clock, folkeregisteret_scope=SCOPE, token_lifetime_s=120)
    state.add_client(CLIENT_ID, keys.public, [SCOPE], key_id=KID)
    _people(state)
    async with serve(state) as url:
        yield state, url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make_client(
    session: aiohttp.ClientSession, url: str, keys: Keys, clock: Callable[[], float], **overrides: Any
) -> MaskinportenClient:
    options: dict[str, Any] = {
        "token_url": f"{url}/token",
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "private_key": SecretStr(keys.private.decode("ascii")),
        "key_id": KID,
        "audience": f"{url}/",
        "clock": clock,
        "refresh_margin_s": 30.0,
    }
    options.update(overrides)
    return MaskinportenClient(session, **options)


@pytest.fixture
def tokens(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession, keys: Keys, clock: Clock
) -> MaskinportenClient:
    return make_client(session, registry[1], keys, clock)


def decode(part: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


# ------------------------------------------------------------------------------------------- addresses


async def test_current_free_format_postadresse(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    result = await lookup_person(tokens, registry[1], PACKAGE, POSTAL)
    assert result == PersonAddressResult(
        found=True, address=RegistryAddress(("Gate 22255",), "9170", "LONGYEARBYEN"), source="postadresse"
    )


async def test_po_box_postadresse(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    result = await lookup_person(tokens, registry[1], PACKAGE, PO_BOX)
    assert result.address == RegistryAddress(("Ola Nordmann", "Postboks 123"), "0102", "OSLO")
    assert result.source == "postadresse"


async def test_bostedsadresse_when_there_is_no_postadresse(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    result = await lookup_person(tokens, registry[1], PACKAGE, RESIDENCE)
    assert result.address == RegistryAddress(("Storgata 12B",), "0155", "OSLO")
    assert result.source == "bostedsadresse"
    assert not result.graded and not result.unknown_residence


async def test_entries_that_are_not_current_are_ignored(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    result = await lookup_person(tokens, registry[1], PACKAGE, HISTORIC)
    assert result.address == RegistryAddress(("Storgata 12B",), "0155", "OSLO")
    assert result.source == "bostedsadresse"


async def test_a_grading_that_is_no_longer_current_does_not_grade(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    result = await lookup_person(tokens, registry[1], PACKAGE, OLD_GRADING)
    assert not result.graded
    assert result.address == RegistryAddress(("Storgata 12B",), "0155", "OSLO")


async def test_unknown_residence(registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient) -> None:
    result = await lookup_person(tokens, registry[1], PACKAGE, UNKNOWN_RESIDENCE)
    assert result == PersonAddressResult(found=True, unknown_residence=True)


async def test_unknown_person_is_not_found(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    state, url = registry
    assert await lookup_person(tokens, url, PACKAGE, NOBODY) == PersonAddressResult(found=False)
    assert state.requests[-1].status == 404


@pytest.mark.parametrize("package", ["privat", "finans", "offentlig-med-hjemmel"])
async def test_both_url_shapes_of_the_rights_packages(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient, package: str
) -> None:
    assert (await lookup_person(tokens, registry[1], package, RESIDENCE)).address is not None


def test_person_path() -> None:
    assert person_path("privat") == "folkeregisteret/api/privat"
    assert person_path("offentlig-med-hjemmel") == "folkeregisteret/offentlig-med-hjemmel/api"
    assert person_path("/folkeregisteret/api/ny-pakke/") == "folkeregisteret/api/ny-pakke"
    with pytest.raises(ValueError, match="empty"):
        person_path(" ")


def test_address_shapes_seen_in_the_documentation() -> None:
    # Skatteetaten's example writes postnummer beside a plain poststed, and the grading in capitals.
    document = {
        "postadresse": [
            {
                "erGjeldende": True,
                "postadresseIFrittFormat": {
                    "adresselinje": ["GATE 22255"],
                    "postnummer": "9170",
                    "poststed": "LONGYEARBYEN",
                },
                "adressegradering": "UGRADERT",
            }
        ]
    }
    assert address_from_person(document).address == RegistryAddress(("GATE 22255",), "9170", "LONGYEARBYEN")
    care_of = vegadresse("Storgata", "1", "0155", "OSLO", care_of="Kari Nordmann")
    residence = {"bostedsadresse": [address_entry("vegadresse", care_of)]}
    assert address_from_person(residence).address == RegistryAddress(
        ("c/o Kari Nordmann", "Storgata 1"), "0155", "OSLO"
    )
    matrikkel = {
        "bostedsadresse": [
            address_entry(
                "matrikkeladresse",
                {
                    "adressetilleggsnavn": "Nordgården",
                    "poststed": {"postnummer": "2390", "poststedsnavn": "MOELV"},
                },
            ),
        ]
    }
    assert address_from_person(matrikkel).address == RegistryAddress(("Nordgården",), "2390", "MOELV")
    assert address_from_person({}).address is None


# ------------------------------------------------------------------------------------------- R9: grading


def _no_secrets(*texts: str) -> None:
    for text in texts:
        assert SECRET_STREET not in text
        for fnr in EVERY_ID:
            assert fnr not in text


@pytest.mark.parametrize("fnr", [FORTROLIG, STRENGT], ids=["fortrolig", "strengtFortrolig"])
async def test_a_graded_address_is_never_returned_or_logged(
    registry: tuple[RegistriesSandbox, str],
    tokens: MaskinportenClient,
    caplog: pytest.LogCaptureFixture,
    fnr: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    result = await lookup_person(tokens, registry[1], PACKAGE, fnr)
    assert result.graded and result.found
    assert result.address is None and result.source is None
    _no_secrets(repr(result), str(result), caplog.text)
    assert any("folkeregisteret" in record.getMessage() for record in caplog.records)  # it did log, safely


@pytest.mark.parametrize(
    "grading", ["fortrolig", "strengtFortrolig", "klientadresse", "STRENGT_FORTROLIG", "Fortrolig"]
)
def test_every_grading_but_ugradert_grades(grading: str) -> None:
    document = {
        "postadresse": [address_entry("postboksadresse", postboksadresse("1", "0102", "OSLO"))],
        "bostedsadresse": [
            address_entry("vegadresse", vegadresse(SECRET_STREET, "7", "9990", "BÅTSFJORD"), grading=grading)
        ],
    }
    result = address_from_person(document)
    assert result == PersonAddressResult(found=True, graded=True)


def test_person_level_protection_grades() -> None:
    document = {
        "adressebeskyttelse": [{"erGjeldende": True, "graderingsnivaa": "strengtFortrolig"}],
        "postadresse": [address_entry("postboksadresse", postboksadresse("1", "0102", "OSLO"))],
    }
    assert address_from_person(document).graded


async def test_no_national_id_in_errors_or_logs(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state, url = registry
    caught: list[RegistryError] = []
    state.fail(503, "folkeregisteret")
    with pytest.raises(TransientRegistryError) as unavailable:
        await lookup_person(tokens, url, PACKAGE, FORTROLIG)
    caught.append(unavailable.value)
    state.fail(None)
    state.slow_s = 2.0
    with pytest.raises(TransientRegistryError) as slow:
        await lookup_person(tokens, url, PACKAGE, FORTROLIG, timeout_s=0.3)
    assert slow.value.reason == "folkeregisteret_timeout"
    caught.append(slow.value)
    state.slow_s = 0.0
    with pytest.raises(TransientRegistryError) as unreachable:
        await lookup_person(tokens, f"http://127.0.0.1:{free_port()}", PACKAGE, FORTROLIG)
    assert unreachable.value.reason == "folkeregisteret_unreachable"
    caught.append(unreachable.value)
    with pytest.raises(PermanentRegistryError) as invalid:
        await lookup_person(tokens, url, PACKAGE, FORTROLIG[:10] + str((int(FORTROLIG[10]) + 1) % 10))
    caught.append(invalid.value)
    for error in caught:
        assert error.__cause__ is None and error.__context__ is None  # aiohttp's messages carry the URL
        _no_secrets(str(error), repr(error), "".join(traceback.format_exception(error)))
    _no_secrets(caplog.text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------- Folkeregisteret auth


async def test_person_routes_require_the_bearer_token(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    _state, url = registry
    address = f"{url}/folkeregisteret/api/{PACKAGE}/v1/personer/{RESIDENCE}"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        async with session.get(address, headers=headers) as response:
            assert response.status == 401
            assert set(await response.json()) == {"kode", "melding"}


async def test_a_refused_token_is_replaced_once(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    state, url = registry
    await tokens.access_token()
    state.tokens.clear()  # Folkeregisteret no longer accepts the cached token
    result = await lookup_person(tokens, url, PACKAGE, RESIDENCE)
    assert result.address is not None
    assert tokens.fetches == 2
    assert state.count("folkeregisteret", 401) == 1


async def test_a_token_without_the_scope_is_a_configuration_error(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession, keys: Keys, clock: Clock
) -> None:
    state, url = registry
    state.add_client("other-client", keys.public, ["skatteetaten:annet"], key_id=KID)
    tokens = make_client(session, url, keys, clock, client_id="other-client", scope="skatteetaten:annet")
    with pytest.raises(RegistryConfigurationError) as caught:
        await lookup_person(tokens, url, PACKAGE, RESIDENCE)
    assert caught.value.reason == "folkeregisteret_unauthorised"


async def test_a_package_we_do_not_have_is_a_configuration_error(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    state, url = registry
    state.packages = frozenset({"finans"})
    with pytest.raises(RegistryConfigurationError):
        await lookup_person(tokens, url, PACKAGE, RESIDENCE)
    assert (await lookup_person(tokens, url, "finans", RESIDENCE)).address is not None


# ------------------------------------------------------------------------------------------- Maskinporten


def test_the_grant_carries_exactly_the_documented_claims(keys: Keys) -> None:
    key = load_private_key(SecretStr(keys.private.decode("ascii")))
    first = build_grant(
        key,
        client_id=CLIENT_ID,
        scope=SCOPE,
        audience="https://test.maskinporten.no/",
        now=1000.0,
        key_id=KID,
    )
    second = build_grant(
        key,
        client_id=CLIENT_ID,
        scope=SCOPE,
        audience="https://test.maskinporten.no/",
        now=1000.0,
        key_id=KID,
    )
    header, claims = decode(first.split(".")[0]), decode(first.split(".")[1])
    assert header == {"alg": "RS256", "kid": KID}
    assert set(claims) == {"aud", "iss", "scope", "iat", "exp", "jti"}
    assert claims["aud"] == "https://test.maskinporten.no/"
    assert claims["iss"] == CLIENT_ID and claims["scope"] == SCOPE
    assert claims["iat"] == 1000 and 0 < claims["exp"] - claims["iat"] <= MAX_GRANT_LIFETIME_S
    assert claims["jti"] != decode(second.split(".")[1])["jti"]  # a grant is never reused


async def test_token_is_cached_until_shortly_before_it_expires(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient, clock: Clock
) -> None:
    state, url = registry
    first = await tokens.access_token()
    await lookup_person(tokens, url, PACKAGE, POSTAL)
    await lookup_person(tokens, url, PACKAGE, RESIDENCE)
    assert tokens.fetches == 1 and state.count("token") == 1
    clock.advance(120 - 30 - 1)  # still inside the margin
    assert await tokens.access_token() == first
    clock.advance(2)  # 30 s before expiry: refresh
    second = await tokens.access_token()
    assert second != first
    assert tokens.fetches == 2 and state.count("token", 200) == 2
    clock.advance(200)  # long after both expired
    assert (await lookup_person(tokens, url, PACKAGE, RESIDENCE)).address is not None
    assert tokens.fetches == 3
    assert state.count("folkeregisteret", 401) == 0  # never sent an expired token


async def test_concurrent_callers_share_one_refresh(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient
) -> None:
    state, url = registry
    values = await asyncio.gather(*(tokens.access_token() for _ in range(20)))
    assert len(set(values)) == 1
    assert tokens.fetches == 1 and state.count("token") == 1
    results = await asyncio.gather(*(lookup_person(tokens, url, PACKAGE, RESIDENCE) for _ in range(10)))
    assert all(result.address is not None for result in results)
    assert tokens.fetches == 1


async def test_a_business_certificate_chain_as_x5c(
    registry: tuple[RegistriesSandbox, str],
    session: aiohttp.ClientSession,
    keys: Keys,
    clock: Clock,
    tmp_path: Path,
) -> None:
    state, url = registry
    state.add_client("cert-client", keys.public, [SCOPE])  # no kid: identified by its certificate
    certificate = tmp_path / "virksomhetssertifikat.pem"
    certificate.write_bytes(self_signed_certificate(keys.private, "NORDLYS INKASSO AS", "987654321"))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(keys.private)
    tokens = make_client(
        session,
        url,
        keys,
        clock,
        client_id="cert-client",
        key_id=None,
        certificate_chain=certificate,
        private_key=key_file,
    )
    header = decode(tokens.build_grant().split(".")[0])
    assert set(header) == {"alg", "x5c"} and len(header["x5c"]) == 1
    assert (await lookup_person(tokens, url, PACKAGE, POSTAL)).address is not None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"audience": "https://maskinporten.no/"}, "maskinporten_invalid_grant"),
        ({"key_id": "another-key"}, "maskinporten_invalid_grant"),
        ({"scope": f"{SCOPE} skatteetaten:mer"}, "maskinporten_invalid_scope"),
        ({"client_id": "unknown-client"}, "maskinporten_invalid_client"),
    ],
    ids=["audience", "kid", "scope", "client"],
)
async def test_refused_grants_are_configuration_errors(
    registry: tuple[RegistriesSandbox, str],
    session: aiohttp.ClientSession,
    keys: Keys,
    clock: Clock,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    state, url = registry
    tokens = make_client(session, url, keys, clock, **overrides)
    with pytest.raises(RegistryConfigurationError) as caught:
        await lookup_person(tokens, url, PACKAGE, RESIDENCE)
    assert caught.value.reason == reason
    assert state.count("folkeregisteret") == 0


async def test_a_grant_signed_with_another_key_is_refused(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession, other_keys: Keys, clock: Clock
) -> None:
    state, url = registry
    tokens = make_client(session, url, other_keys, clock)
    with pytest.raises(RegistryConfigurationError):
        await tokens.access_token()
    assert state.rejected_grants[-1][1].endswith("Bad signature.")


async def test_a_clock_out_of_step_is_refused(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession, keys: Keys, clock: Clock
) -> None:
    state, url = registry
    tokens = make_client(session, url, keys, lambda: clock() - 60)
    with pytest.raises(RegistryConfigurationError):
        await tokens.access_token()
    assert "iat" in state.rejected_grants[-1][1]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_maskinporten_down_is_transient(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient, status: int
) -> None:
    state, url = registry
    state.fail(status, "token")
    with pytest.raises(TransientRegistryError) as caught:
        await lookup_person(tokens, url, PACKAGE, RESIDENCE)
    assert caught.value.reason == "maskinporten_unavailable"
    state.fail(None)
    assert (await lookup_person(tokens, url, PACKAGE, RESIDENCE)).address is not None


async def test_the_token_and_grant_are_never_logged(
    registry: tuple[RegistriesSandbox, str], tokens: MaskinportenClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await tokens.access_token()
    await lookup_person(tokens, registry[1], PACKAGE, POSTAL)
    assert token not in caplog.text
    assert token not in repr(tokens)
    assert "eyJ" not in caplog.text  # no JWT


def test_the_key_must_be_named_exactly_once() -> None:
    private, _public = generate_client_key(1024)
    _other_private, _ = generate_client_key(1024)
    common: dict[str, Any] = {
        "token_url": "http://127.0.0.1:9/token",
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "private_key": SecretStr(private.decode("ascii")),
        "audience": "https://test.maskinporten.no/",
    }
    session: Any = object()  # never used: the constructor fails first
    with pytest.raises(ValueError, match="exactly one"):
        MaskinportenClient(session, **common)
    certificate = self_signed_certificate(private, "X", "987654321")
    with pytest.raises(ValueError, match="exactly one"):
        MaskinportenClient(session, **common, key_id=KID, certificate_chain=certificate)
    foreign = self_signed_certificate(_other_private, "Y", "987654321")
    with pytest.raises(ValueError, match="does not belong"):
        MaskinportenClient(session, **common, certificate_chain=foreign)
    with pytest.raises(ValueError, match="could not be read"):
        MaskinportenClient(session, **{**common, "private_key": SecretStr("not a key")}, key_id=KID)


@pytest.fixture(autouse=True)
def _no_stray_ids(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Whatever a test does, no national id reaches a log record."""
    yield
    for record in caplog.get_records("call"):
        message = record.getMessage()
        for fnr in EVERY_ID:
            assert fnr not in message
