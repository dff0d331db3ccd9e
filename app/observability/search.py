"""Job visibility: the custom search attributes Cosmos sets on its workflows, defined once.

The API sets them when it starts a job; the workflow upserts ``CosmosStatus`` as the job moves.
A server must have them registered (``cosmos dev`` and the tests do; production servers:
``temporal operator search-attribute create``, see the README). Where they are not, jobs run
without them and listing falls back to Temporal's own ``ExecutionStatus``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection
from urllib.parse import quote

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

log = logging.getLogger("cosmos.search")

STATUS = SearchAttributeKey.for_keyword("CosmosStatus")
"""PENDING (started), RUNNING (a worker took it), then SUCCEEDED, FAILED or CANCELLED."""
SOURCE = SearchAttributeKey.for_keyword("CosmosSource")
"""The source URI (``file://…``, ``s3://…``), cut to KEYWORD_MAX characters."""
CODEC = SearchAttributeKey.for_keyword("CosmosCodec")
"""h264, hevc or av1."""
REQUESTER = SearchAttributeKey.for_keyword("CosmosRequester")
"""The API key's id (``key-`` and a SHA-256 prefix of the key, never the key) or anonymous."""

KEYS: tuple[SearchAttributeKey[str], ...] = (STATUS, SOURCE, CODEC, REQUESTER)
KEYWORD_MAX = 255
"""SQL visibility stores keywords in VARCHAR(255) columns."""
CACHE_S = 30.0
ANONYMOUS = "anonymous"


def dev_server_args() -> list[str]:
    """``temporal server start-dev`` arguments that register every key."""
    return [arg for key in KEYS for arg in ("--search-attribute", f"{key.name}=Keyword")]


def create_commands(namespace: str = "default") -> list[str]:
    """What an operator runs once per namespace on a production server."""
    return [
        f"temporal operator search-attribute create --namespace {namespace}"
        f" --name {key.name} --type Keyword"
        for key in KEYS
    ]


def key_id(api_key: str) -> str:
    """A name for an API key that says which key was used without saying what it is."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def start_attributes(
    registered: Collection[str], *, source_uri: str, codec: str, requester: str
) -> TypedSearchAttributes:
    """The attributes a new job starts with: only those the server knows (a start naming an
    unregistered attribute is refused)."""
    values = {
        STATUS: "PENDING",
        SOURCE: source_uri[:KEYWORD_MAX],
        CODEC: codec,
        REQUESTER: requester[:KEYWORD_MAX],
    }
    return TypedSearchAttributes(
        [SearchAttributePair(key, value) for key, value in values.items() if key.name in registered]
    )


def quoted(value: str) -> str:
    """A string literal for a visibility query."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def source_prefix(source: str) -> str:
    """A path is matched as the ``file://`` URI the API stores (percent-encoded like
    ``Path.as_uri``); URIs are matched as given."""
    if source.startswith("/"):
        return "file://" + quote(source)
    return source


class Registered:
    """Which Cosmos attributes the namespace has, asked of the server at most every CACHE_S."""

    def __init__(self) -> None:
        self._names: frozenset[str] = frozenset()
        self._checked = -CACHE_S

    async def names(self, client: Client, namespace: str) -> frozenset[str]:
        now = time.monotonic()
        if now - self._checked < CACHE_S:
            return self._names
        try:
            response = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace)
            )
        except RPCError as err:
            if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
            # e.g. not allowed to ask (a restricted cloud key): run without them
            log.warning("cannot list search attributes (%s); jobs are started without them", err)
            names: frozenset[str] = frozenset()
        else:
            custom = response.custom_attributes
            keyword = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
            names = frozenset(key.name for key in KEYS if custom.get(key.name) == keyword)
            missing = [key.name for key in KEYS if key.name not in names]
            if missing and (names != self._names or self._checked < 0):
                log.warning(
                    "search attributes not Keyword-registered in %s: %s (README, Job visibility)",
                    namespace,
                    ", ".join(missing),
                )
        self._names, self._checked = names, now
        return names


registered = Registered()
"""One cache per process (the API's)."""
