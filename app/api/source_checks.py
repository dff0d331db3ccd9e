"""The API's check of a source named in a request: the video, a dub or a subtitle file."""

from __future__ import annotations

from fastapi import HTTPException

from app.api.errors import field_error
from app.core.settings import Settings
from app.storage.object_store import store_for
from app.storage.sources import SourceError, resolve_source


def _check_object(uri: str, settings: Settings) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        size = store_for(uri, settings).size(uri)
    except FileNotFoundError:
        raise SourceError("source object does not exist") from None
    except (BotoCoreError, ClientError) as err:
        raise HTTPException(503, detail=f"object storage unavailable: {err}") from None
    if size == 0:
        raise SourceError("source object is empty")


def checked_source(source: str, settings: Settings, location: str = "source") -> str:
    """The source as a URI: a path under an allowed root, or an S3 object of an allowed bucket
    that exists and is not empty. A refusal is a 422 naming ``location`` (e.g.
    ``subtitles.0.source``). Blocking (S3 is asked): call it in a thread."""
    try:
        uri = resolve_source(source, settings.allowed_source_roots, settings.source_bucket_set)
        if uri.startswith("s3://"):
            _check_object(uri, settings)
    except SourceError as err:
        raise field_error(location, str(err)) from None
    return uri
