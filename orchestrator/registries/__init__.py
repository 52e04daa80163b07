"""Registry look-ups: Enhetsregisteret (Brreg), Folkeregisteret (through Maskinporten) and Posten's files.

What every registry module shares lives here: the address a registry gives back (:class:`RegistryAddress`)
and the error tree the HTTP clients translate their failures into, always at the boundary:

``TransientRegistryError``
    Try again later: a 5xx, a 429, a timeout, a connection that failed. ``retry_after_s`` when the registry
    said how long to wait.
``PermanentRegistryError``
    This request will never succeed as it is (a 400: the organisation number is malformed, ...).
``RegistryConfigurationError``
    Our side is wrong: credentials, client registration, scope, rights package. An operator must act.

No message in this tree ever contains a national identity number (R9): the clients build their messages from
status codes and error *types*, never from a URL or a response body.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.http import retry_after_s

__all__ = [
    "PermanentRegistryError",
    "RegistryAddress",
    "RegistryConfigurationError",
    "RegistryError",
    "TransientRegistryError",
    "error_for_status",
]


@dataclass(frozen=True)
class RegistryAddress:
    """A postal address as a registry gives it: the lines above the postal code, then code, city, country.

    ``country`` is an ISO 3166-1 alpha-2 code (``NO`` unless the registry said otherwise).
    """

    lines: tuple[str, ...]
    postal_code: str
    city: str
    country: str = "NO"

    def as_lines(self) -> list[str]:
        """The address as it goes on an envelope (the country only when it is not Norway)."""
        tail = f"{self.postal_code} {self.city}".strip()
        out = [*self.lines, tail] if tail else [*self.lines]
        if self.country and self.country != "NO":
            out.append(self.country)
        return out


class RegistryError(Exception):
    """Base of every error a registry client raises; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason


class TransientRegistryError(RegistryError):
    """Try again later: the registry is busy or down, or the network failed."""

    def __init__(self, reason: str, message: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(reason, message)
        self.retry_after_s = retry_after_s


class PermanentRegistryError(RegistryError):
    """The registry will never answer this request as it is (a 400, a malformed identifier)."""


class RegistryConfigurationError(RegistryError):
    """Our side is misconfigured (credentials, client, scope, rights package); an operator must act."""


def error_for_status(registry: str, status: int, retry_after: str | None = None) -> RegistryError:
    """The error for an HTTP status a registry answered that its client has no better meaning for.

    5xx, 408 and 429 are transient (with ``Retry-After`` when given); 401 and 403 mean our credentials or
    rights are wrong; any other 4xx is permanent. ``reason`` is ``<registry>_<kind>``, the message names only
    the registry and the status.
    """
    message = f"{registry} answered HTTP {status}"
    if status >= 500 or status in (408, 429):
        return TransientRegistryError(f"{registry}_unavailable", message, retry_after_s(retry_after))
    if status in (401, 403):
        return RegistryConfigurationError(f"{registry}_unauthorised", message)
    return PermanentRegistryError(f"{registry}_rejected", message)
