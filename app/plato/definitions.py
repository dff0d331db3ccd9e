"""Registered Plato definitions, kept in the object store (a local folder or S3), not in the API.

One object per version, ``<pipelines>/<id>/<sha256 hex>.json``: the version is the hash of the
YAML, so registering the same text again finds the same object, and a run that names a version
gets exactly that text. Checking a definition against the functions there are is the caller's
(``app.plato.rules.parse``); this module only keeps and finds them.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from app.core.settings import Settings
from app.plato.rules.model import Definition
from app.storage.object_store import Store, join, store_for

MAX_OBJECT_BYTES = 4 * 1024 * 1024


class StoredDefinition(BaseModel):
    id: str
    version: str
    steps: list[str] = Field(description="The steps its rules run, in order of first mention.")
    created_at: datetime
    definition: Definition


VERSION_PATTERN = r"^sha256:[0-9a-f]{64}$"
"""A definition's version: the SHA-256 of its text."""
VERSION = re.compile(VERSION_PATTERN)


class DefinitionStore:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.resolved_pipelines_uri
        self.store: Store = store_for(self.root, settings)

    def _uri(self, pipeline_id: str, version: str) -> str:
        if not VERSION.fullmatch(version):  # never a path of the caller's making
            raise ValueError(f"not a definition version: {version!r}")
        return join(self.root, pipeline_id, version.removeprefix("sha256:") + ".json")

    def put(self, definition: Definition, steps: list[str]) -> tuple[StoredDefinition, bool]:
        """The stored version, and whether it is new (False: the same text was there)."""
        found = self.get(definition.id, definition.version)
        if found is not None:
            return found, False
        stored = StoredDefinition(
            id=definition.id,
            version=definition.version,
            steps=steps,
            created_at=datetime.now(UTC),
            definition=definition,
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "definition.json"
            path.write_text(stored.model_dump_json(by_alias=True))
            self.store.upload(path, self._uri(definition.id, definition.version))
        return stored, True

    def get(self, pipeline_id: str, version: str | None = None) -> StoredDefinition | None:
        """That version, or the latest registered."""
        if version is None:
            versions = self.versions(pipeline_id)
            return versions[-1] if versions else None
        uri = self._uri(pipeline_id, version)
        try:
            data = self.store.read_bytes(uri, MAX_OBJECT_BYTES)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredDefinition.model_validate(json.loads(data))

    def versions(self, pipeline_id: str) -> list[StoredDefinition]:
        """Oldest first."""
        names = self._names(join(self.root, pipeline_id))
        found = [self.get(pipeline_id, "sha256:" + n.removesuffix(".json")) for n in names]
        return sorted((f for f in found if f is not None), key=lambda f: f.created_at)

    def ids(self) -> list[str]:
        return sorted({name.split("/", 1)[0] for name in self._names(self.root) if "/" in name})

    def _names(self, prefix: str) -> list[str]:
        try:
            return [n for n in self.store.names(prefix) if n.endswith(".json")]
        except FileNotFoundError:
            return []
