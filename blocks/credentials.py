"""Where an agent's API key comes from: the one resolution order.

1. the block the agent names (`credentials: my-block` in its definition),
   loaded as `ProviderCredentials.load("my-block")`;
2. the SDK's environment variables (`OPENAI_API_KEY` + `OPENAI_BASE_URL`,
   `ANTHROPIC_API_KEY` + `ANTHROPIC_BASE_URL`);
3. a `ProviderCredentials` block named `<provider>-default` (`openai-default`).

A block the agent names is authoritative: if it cannot be read, resolution
stops with `MissingCredentials` naming it instead of quietly billing another
key. Blocks are only looked up when a Prefect API is configured
(`PREFECT_API_URL`, in the environment, the Prefect profile or temporary
settings); without one no ephemeral server is started. Block lookups, found or
not, are cached per process and per API URL; environment variables are read on
every call. No message and no `repr` here contains a secret.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import SecretStr

from agents.providers import PROVIDERS, SPECS, ProviderSpec
from blocks.providers import ProviderCredentials

__all__ = [
    "acall_credentials",
    "call_credentials",
    "CredentialsError",
    "MissingCredentials",
    "Resolved",
    "aresolve_credentials",
    "clear_credentials_cache",
    "resolve_credentials",
]

def _specs() -> dict[str, ProviderSpec]:
    """Credential kind ("openai", "openai-compatible", "anthropic") -> the provider it serves."""
    return {kind: spec for spec in SPECS for kind in spec.credential_kinds}


_BLOCK_TYPE = ProviderCredentials.get_block_type_slug()


class CredentialsError(ValueError):
    """A credentials problem the user can fix; the message names the setting."""


class MissingCredentials(CredentialsError):
    """No usable API key was found; the message names every place looked at."""


@dataclass(frozen=True)
class Resolved:
    """An API key and where it came from. `repr` never shows the key; unpacks as
    `api_key, base_url, source = resolved`.

    `base_url` None means the provider's public endpoint. Adapters should then
    pass that endpoint explicitly: the SDKs would otherwise read `*_BASE_URL`
    from the environment and could send a block's key somewhere else.
    """

    api_key: str = field(repr=False)
    base_url: str | None
    source: str  # e.g. "block 'team-openai'", "env OPENAI_API_KEY"
    organization: str | None = None

    def __iter__(self) -> Iterator[str | None]:
        return iter((self.api_key, self.base_url, self.source))


@dataclass(frozen=True)
class _Found:
    """What one block lookup found (cached); `api_key` stays a SecretStr."""

    provider: str
    api_key: SecretStr
    base_url: str | None
    organization: str | None


@dataclass(frozen=True)
class _Unreadable:
    """A block lookup that failed for a reason other than "not found" (not cached)."""

    reason: str


_NOT_FOUND = object()
_cache: dict[tuple[str, str], _Found | object] = {}
_cache_lock = threading.Lock()


def clear_credentials_cache() -> None:
    """Forget every block lookup of this process (found and not found)."""
    with _cache_lock:
        _cache.clear()


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _check_provider(provider: str) -> ProviderSpec:
    found = _specs().get(provider)
    if found is None:
        raise CredentialsError(
            f"unknown provider {provider!r} for credentials; expected one of: {', '.join(_specs())}"
        )
    return found


def _default_block(provider: str) -> str:
    return f"{provider}-default"


def _from_block(block: ProviderCredentials) -> _Found:
    return _Found(
        provider=block.provider,
        api_key=block.api_key,
        base_url=block.base_url,
        organization=block.organization,
    )


def _classify_error(exc: BaseException) -> _Unreadable | object:
    """`Block.load` raises ValueError (caused by ObjectNotFound) for a missing
    document and all kinds of errors otherwise; turn them into a short reason
    without the Prefect traceback or any field values."""
    from prefect.exceptions import ObjectNotFound
    from pydantic import ValidationError

    if isinstance(exc, ValueError) and isinstance(exc.__cause__, ObjectNotFound):
        return _NOT_FOUND
    if isinstance(exc.__cause__, ValidationError):
        return _Unreadable(f"it exists but does not validate as {_BLOCK_TYPE}; save it again")
    return _Unreadable(f"it could not be read from the Prefect API at PREFECT_API_URL ({type(exc).__name__})")


def _cached(api_url: str, name: str) -> _Found | object | None:
    with _cache_lock:
        return _cache.get((api_url, name))


def _remember(api_url: str, name: str, value: _Found | object) -> _Found | object:
    if isinstance(value, _Unreadable):
        return value  # a transient failure: try again next time
    with _cache_lock:
        return _cache.setdefault((api_url, name), value)


def _lookup_sync(api_url: str, name: str) -> _Found | object:
    hit = _cached(api_url, name)
    if hit is not None:
        return hit
    try:
        found: _Found | object = _from_block(ProviderCredentials.load(name, _sync=True))
    except Exception as exc:  # noqa: BLE001 - classified, never re-raised raw
        found = _classify_error(exc)
    return _remember(api_url, name, found)


async def _lookup_async(api_url: str, name: str) -> _Found | object:
    hit = _cached(api_url, name)
    if hit is not None:
        return hit
    try:
        found: _Found | object = _from_block(await ProviderCredentials.aload(name))
    except Exception as exc:  # noqa: BLE001 - classified, never re-raised raw
        found = _classify_error(exc)
    return _remember(api_url, name, found)


# -- the resolution order, written once as a generator -----------------------------
#
# `_resolve` yields the name of each block it needs and receives the lookup result,
# so the sync and async entry points share every rule and every message.


def _use_block(provider: str, name: str, found: _Found, how: str) -> Resolved:
    if found.provider not in _check_provider(provider).credential_kinds:
        raise CredentialsError(
            f"{how} {name!r} holds {found.provider!r} credentials, but the agent's model"
            f" needs {provider!r}; point `credentials:` at a {provider} block or fix the"
            f" block's provider field"
        )
    return Resolved(
        api_key=found.api_key.get_secret_value(),
        base_url=found.base_url,
        source=f"block {name!r}",
        organization=found.organization,
    )


def _resolve(provider: str, block_name: str | None, api_url: str | None):
    spec = _check_provider(provider)
    key_var, url_var = spec.key_var, spec.base_url_var
    default = _default_block(provider)
    block_name = (block_name or "").strip() or None
    no_api = "not looked up: no Prefect API is configured (PREFECT_API_URL is unset)"
    alternatives = (
        f"set {key_var}, or save a ProviderCredentials block named {default!r}"
    )

    # (1) the block the agent names
    if block_name is not None:
        if api_url is None:
            raise MissingCredentials(
                f"No {provider} API key: the agent names credentials block {block_name!r},"
                f" which was {no_api}. Set PREFECT_API_URL to the server that holds it,"
                f" or remove `credentials: {block_name}` from the agent to use"
                f" {key_var} or the block {default!r}."
            )
        found = yield block_name
        if found is _NOT_FOUND:
            raise MissingCredentials(
                f"No {provider} API key: the agent names credentials block {block_name!r},"
                f" but no {_BLOCK_TYPE} block with that name exists on the Prefect server."
                f" Create it (a ProviderCredentials block for provider {provider!r} with your key,"
                f" saved as {block_name!r}), or remove `credentials: {block_name}` from the"
                f" agent to use {key_var} or the block {default!r}."
            )
        if isinstance(found, _Unreadable):
            raise MissingCredentials(
                f"No {provider} API key: the agent names credentials block {block_name!r},"
                f" but {found.reason}."
            )
        return _use_block(provider, block_name, found, "credentials block")

    # (2) the SDK's environment variables
    key = os.environ.get(key_var, "").strip()
    if key:
        base_url = os.environ.get(url_var, "").strip() or None
        source = f"env {key_var}" + (f" and {url_var}" if base_url else "")
        return Resolved(api_key=key, base_url=base_url, source=source)

    # (3) the `<provider>-default` block
    if api_url is None:
        default_state = no_api
    else:
        found = yield default
        if isinstance(found, _Found):
            return _use_block(provider, default, found, "default credentials block")
        default_state = (
            "not found on the Prefect server" if found is _NOT_FOUND else found.reason
        )
    raise MissingCredentials(
        f"No {provider} API key found. Looked at: (1) a credentials block named by the"
        f" agent (`credentials:` in its definition): none named; (2) environment"
        f" variable {key_var}: not set; (3) Prefect block {default!r} (type"
        f" {_BLOCK_TYPE}): {default_state}. Fix: {alternatives}, or name a block with"
        f" `credentials:` in the agent."
        + (
            f" A local OpenAI-compatible server that ignores keys still needs"
            f" {key_var} set to any value."
            if provider != "anthropic"
            else ""
        )
    )


def _drive_sync(provider: str, block_name: str | None) -> Resolved:
    api_url = _api_url()
    gen = _resolve(provider, block_name, api_url)
    try:
        name = next(gen)
        while True:  # only reached with an API URL: _resolve yields nothing without one
            name = gen.send(_lookup_sync(api_url or "", name))
    except StopIteration as done:
        return done.value


async def _drive_async(provider: str, block_name: str | None) -> Resolved:
    api_url = _api_url()
    gen = _resolve(provider, block_name, api_url)
    try:
        name = next(gen)
        while True:
            name = gen.send(await _lookup_async(api_url or "", name))
    except StopIteration as done:
        return done.value


def resolve_credentials(provider: str, block_name: str | None = None) -> Resolved:
    """The API key for `provider` ("openai", "anthropic", "openai-compatible"),
    following the resolution order above. `block_name` is the agent's
    `credentials:` value. Raises `MissingCredentials` (a ValueError) naming
    every place looked at, `CredentialsError` for a block of the wrong provider
    or an unknown provider. Safe to call from sync code, including code running
    under an event loop (it uses Prefect's sync client)."""
    return _drive_sync(provider, block_name)


async def aresolve_credentials(provider: str, block_name: str | None = None) -> Resolved:
    """`resolve_credentials` for async code: awaits `ProviderCredentials.aload`."""
    return await _drive_async(provider, block_name)


# -- what a call needs: the one rule for "explicit credentials or the SDK's own" -----------


def _needed(provider: str, block_name: str | None) -> bool:
    """Explicit credentials when the agent names a block or the SDK's key variable is
    unset; otherwise the SDK reads its own environment variables (no lookup at all)."""
    spec = PROVIDERS.get(provider)
    return spec is not None and spec.key_var is not None and (bool(block_name) or not spec.key_set())


def call_credentials(provider: str, block_name: str | None = None) -> dict[str, str | None]:
    """The ``api_key``/``base_url`` keywords of ``agents.call_agent`` for one call to
    ``provider`` ({} when the SDK's environment serves it). CredentialsError as above."""
    if not _needed(provider, block_name):
        return {}
    found = resolve_credentials(provider, block_name)
    return {"api_key": found.api_key, "base_url": found.base_url}


async def acall_credentials(provider: str, block_name: str | None = None) -> dict[str, str | None]:
    """:func:`call_credentials` for async code."""
    if not _needed(provider, block_name):
        return {}
    found = await aresolve_credentials(provider, block_name)
    return {"api_key": found.api_key, "base_url": found.base_url}
