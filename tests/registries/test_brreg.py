"""lookup_organisation against the registry sandbox: a real HTTP server on 127.0.0.1, port 0, answering with
Enhetsregisteret's response shapes (200, 404, 410 with the removed unit's body, 400, faults)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import date

import aiohttp
import pytest

from orchestrator.identifiers import mod11_check_digit
from orchestrator.registries import (
    PermanentRegistryError,
    RegistryAddress,
    TransientRegistryError,
)
from orchestrator.registries.brreg import OrganisationResult, lookup_organisation
from orchestrator.sandbox.registries import RegistriesSandbox, brreg_address, enhet, serve


def orgnr(payload: int) -> str:
    """A valid organisation number starting with the 8 digits of ``payload``."""
    for base in range(payload, payload + 50):
        digits = f"{base:08d}"
        check = mod11_check_digit(digits, (3, 2, 7, 6, 5, 4, 3, 2))
        if check is not None:
            return f"{digits}{check}"
    raise AssertionError("no valid organisation number")  # pragma: no cover


ACTIVE = orgnr(91234560)
BUSINESS_ONLY = orgnr(92345670)
BANKRUPT = orgnr(93456780)
REMOVED = orgnr(94567890)
UNKNOWN = orgnr(95678900)
FOREIGN = orgnr(96789010)
WINDING_UP = orgnr(97890120)
FORCED = orgnr(98901230)

POST = brreg_address(["Postboks 123 Sentrum"], "0102", "OSLO")
BUSINESS = brreg_address(["Storgata 1", "3. etasje"], "0155", "OSLO")


@pytest.fixture
async def registry() -> AsyncIterator[tuple[RegistriesSandbox, str]]:
    state = RegistriesSandbox()
    state.add_organisation(enhet(ACTIVE, "NORDLYS ENERGI AS", postadresse=POST, forretningsadresse=BUSINESS))
    state.add_organisation(enhet(BUSINESS_ONLY, "FJORD BAKERI AS", forretningsadresse=BUSINESS))
    state.add_organisation(enhet(BANKRUPT, "KONKURS AS", konkurs=True))
    state.add_organisation(enhet(WINDING_UP, "AVVIKLING AS", under_avvikling=True))
    state.add_organisation(enhet(FORCED, "TVANG AS", under_tvangsavvikling=True))
    state.add_organisation(
        enhet(
            FOREIGN,
            "UTLAND NUF",
            postadresse=brreg_address(
                ["Storgatan 1"], "11122", "STOCKHOLM", country="Sverige", country_code="SE"
            ),
            form=("NUF", "Norskregistrert utenlandsk foretak"),
        )
    )
    state.remove_organisation(REMOVED, "BORTE AS", slettedato="2022-08-09")
    async with serve(state) as url:
        yield state, f"{url}/enhetsregisteret/api"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_found_uses_postadresse(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    _state, base = registry
    result = await lookup_organisation(session, base, ACTIVE)
    assert result == OrganisationResult(
        organisation_number=ACTIVE,
        found=True,
        name="NORDLYS ENERGI AS",
        address=RegistryAddress(("Postboks 123 Sentrum",), "0102", "OSLO", "NO"),
        organisation_form="AS",
    )
    assert not result.stop_collection


async def test_without_postadresse_uses_forretningsadresse(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    _state, base = registry
    result = await lookup_organisation(session, base, BUSINESS_ONLY)
    assert result.address == RegistryAddress(("Storgata 1", "3. etasje"), "0155", "OSLO")
    assert result.address.as_lines() == ["Storgata 1", "3. etasje", "0155 OSLO"]


async def test_spaces_in_the_number_are_allowed(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    _state, base = registry
    spaced = f"{ACTIVE[:3]} {ACTIVE[3:6]} {ACTIVE[6:]}"
    assert (await lookup_organisation(session, base, spaced)).organisation_number == ACTIVE


async def test_foreign_address_keeps_its_country(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    _state, base = registry
    result = await lookup_organisation(session, base, FOREIGN)
    assert result.address == RegistryAddress(("Storgatan 1",), "11122", "STOCKHOLM", "SE")
    assert result.address.as_lines()[-1] == "SE"
    assert result.organisation_form == "NUF"


async def test_unknown_is_not_found(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    state, base = registry
    result = await lookup_organisation(session, base, UNKNOWN)
    assert result == OrganisationResult(organisation_number=UNKNOWN, found=False)
    assert state.requests[-1].status == 404


async def test_removed_is_deleted_with_its_date(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    state, base = registry
    result = await lookup_organisation(session, base, REMOVED)
    assert result.found and result.deleted
    assert result.name == "BORTE AS"
    assert result.deleted_on == date(2022, 8, 9)
    assert result.address is None
    assert result.stop_collection
    assert state.requests[-1].status == 410


async def test_bankrupt_stops_collection(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    _state, base = registry
    result = await lookup_organisation(session, base, BANKRUPT)
    assert result.bankrupt and not result.winding_up and not result.deleted
    assert result.stop_collection  # R8: stop ordinary collection, flag for a person


@pytest.mark.parametrize("number", [WINDING_UP, FORCED], ids=["underAvvikling", "tvangsavvikling"])
async def test_winding_up_stops_collection(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession, number: str
) -> None:
    _state, base = registry
    result = await lookup_organisation(session, base, number)
    assert result.winding_up and not result.bankrupt
    assert result.stop_collection


async def test_invalid_number_is_permanent_and_never_sent(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    state, base = registry
    invalid = ACTIVE[:8] + str((int(ACTIVE[8]) + 1) % 10)
    with pytest.raises(PermanentRegistryError) as caught:
        await lookup_organisation(session, base, invalid)
    assert caught.value.reason == "invalid_organisation_number"
    assert state.requests == []


async def test_bad_request_is_permanent(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    state, base = registry
    state.fail(400, "brreg")
    with pytest.raises(PermanentRegistryError) as caught:
        await lookup_organisation(session, base, ACTIVE)
    assert caught.value.reason == "brreg_rejected"


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_are_transient(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession, status: int
) -> None:
    state, base = registry
    state.fail(status, "brreg")
    with pytest.raises(TransientRegistryError) as caught:
        await lookup_organisation(session, base, ACTIVE)
    assert caught.value.reason == "brreg_unavailable"
    state.fail(None)
    assert (await lookup_organisation(session, base, ACTIVE)).found


async def test_timeout_is_transient(
    registry: tuple[RegistriesSandbox, str], session: aiohttp.ClientSession
) -> None:
    state, base = registry
    state.slow_s = 2.0
    with pytest.raises(TransientRegistryError) as caught:
        await lookup_organisation(session, base, ACTIVE, timeout_s=0.2)
    assert caught.value.reason == "brreg_timeout"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_is_transient(session: aiohttp.ClientSession) -> None:
    with pytest.raises(TransientRegistryError) as caught:
        await lookup_organisation(session, f"http://127.0.0.1:{free_port()}/enhetsregisteret/api", ACTIVE)
    assert caught.value.reason == "brreg_unreachable"
