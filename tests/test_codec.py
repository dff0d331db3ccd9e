"""Payload encryption: the AES-GCM codec, a workflow whose history holds only ciphertext, and the
codec server the Web UI calls, over HTTP on loopback."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from app.core.codec import ENCODING, KEY_ID, AesGcmCodec, PayloadKeyError, parse_keys
from app.core.settings import Settings
from app.core.temporal import data_converter
from tests.stack import free_port

SECRET = "s3cret-source-/srv/media/confidential.mov"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def plain(text: str) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([text])[0]


# ------------------------------------------------------------------------- codec


async def test_round_trip_hides_the_plaintext_and_names_the_key() -> None:
    codec = AesGcmCodec(parse_keys(f"k1={new_key()}"))
    original = [plain(SECRET), plain("second")]
    encoded = await codec.encode(original)
    for payload in encoded:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID] == b"k1"
        assert SECRET.encode() not in payload.SerializeToString()
    assert await codec.decode(encoded) == original


async def test_same_payload_encrypts_differently_each_time() -> None:
    codec = AesGcmCodec(parse_keys(f"k1={new_key()}"))
    first, second = await codec.encode([plain(SECRET), plain(SECRET)])
    assert first.data != second.data


async def test_rotation_keeps_old_payloads_readable() -> None:
    old, new = new_key(), new_key()
    before = await AesGcmCodec(parse_keys(f"old={old}")).encode([plain(SECRET)])
    rotated = AesGcmCodec(parse_keys(f"new={new},old={old}"))
    assert await rotated.decode(before) == [plain(SECRET)]
    after = await rotated.encode([plain(SECRET)])
    assert after[0].metadata[KEY_ID] == b"new"


async def test_unknown_key_id_is_a_clear_error() -> None:
    encoded = await AesGcmCodec(parse_keys(f"gone={new_key()}")).encode([plain(SECRET)])
    with pytest.raises(PayloadKeyError, match="unknown key id 'gone'"):
        await AesGcmCodec(parse_keys(f"k1={new_key()}")).decode(encoded)


async def test_wrong_key_under_a_known_id_is_a_clear_error() -> None:
    encoded = await AesGcmCodec(parse_keys(f"k1={new_key()}")).encode([plain(SECRET)])
    with pytest.raises(PayloadKeyError, match="does not decrypt with key id 'k1'"):
        await AesGcmCodec(parse_keys(f"k1={new_key()}")).decode(encoded)


async def test_unencrypted_payloads_pass_through_decode() -> None:
    codec = AesGcmCodec(parse_keys(f"k1={new_key()}"))
    assert await codec.decode([plain(SECRET)]) == [plain(SECRET)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("k1=" + base64.b64encode(os.urandom(16)).decode(), "'k1' is 16 bytes"),
        (f"k1={new_key()},k1={new_key()}", "'k1' is given twice"),
        ("k1=not*base64", "'k1' is not valid base64"),
        (new_key().rstrip("="), "expected key-id=base64"),
    ],
)
def test_bad_key_configuration_fails_settings(value: str, message: str) -> None:
    with pytest.raises(PayloadKeyError, match=message):
        parse_keys(value)
    with pytest.raises(ValidationError, match=message):
        Settings(payload_keys=value)


def test_no_keys_means_the_plain_converter() -> None:
    assert data_converter(Settings(payload_keys="")) is pydantic_data_converter
    converter = data_converter(Settings(payload_keys=f"k1={new_key()}"))
    assert isinstance(converter.payload_codec, AesGcmCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class


def test_codec_origins_default_to_the_web_ui() -> None:
    assert Settings(web_ui_url="http://ui.example:8080/base/").codec_origins == [
        "http://ui.example:8080"
    ]
    assert Settings(codec_cors_origins="https://a.example/, https://b.example").codec_origins == [
        "https://a.example",
        "https://b.example",
    ]


# ------------------------------------------------------------- a workflow, encrypted


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn(sandboxed=False)  # this module imports httpx, which the sandbox refuses
class ShoutWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_history_holds_only_ciphertext(time_skipping_env: WorkflowEnvironment) -> None:
    env = time_skipping_env
    converter = data_converter(Settings(payload_keys=f"k1={new_key()}"))
    client = await Client.connect(
        env.client.service_client.config.target_host,
        namespace="default",
        data_converter=converter,
    )
    queue = f"codec-{uuid.uuid4().hex[:8]}"
    workflow_id = f"codec-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[ShoutWorkflow], activities=[shout]):
        result = await client.execute_workflow(
            ShoutWorkflow.run, SECRET, id=workflow_id, task_queue=queue
        )
    assert result == SECRET.upper()

    # a client without the codec sees what the server stores
    history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    stored: list[Payload] = []
    for event in history.events:
        for attrs, field in [
            (event.workflow_execution_started_event_attributes, "input"),
            (event.activity_task_scheduled_event_attributes, "input"),
            (event.activity_task_completed_event_attributes, "result"),
            (event.workflow_execution_completed_event_attributes, "result"),
        ]:
            stored += getattr(attrs, field).payloads
    assert len(stored) == 4
    for payload in stored:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID] == b"k1"
        raw = payload.SerializeToString()
        assert SECRET.encode() not in raw
        assert SECRET.upper().encode() not in raw


# ------------------------------------------------------------- the codec server

UI_ORIGIN = "http://ui.example:8080"


@pytest.fixture(scope="module")
def codec_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The API with keys and no Temporal: the codec endpoints must not need it."""
    keys = f"k1={new_key()}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSMOS_")}
    env |= {
        "COSMOS_PAYLOAD_KEYS": keys,
        "COSMOS_CODEC_CORS_ORIGINS": UI_ORIGIN,
        "COSMOS_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "COSMOS_DATA_DIR": str(tmp_path_factory.mktemp("codec")),
    }
    log = tmp_path_factory.mktemp("codec-log") / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.api.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=Path(__file__).parent.parent, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, keys
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_codec_server_round_trip(codec_server: tuple[str, str]) -> None:
    url, _ = codec_server
    data = base64.b64encode(SECRET.encode()).decode()
    body = {"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                          "data": data}]}  # fmt: skip
    headers = {"X-Namespace": "default", "Origin": UI_ORIGIN}
    with httpx.Client(base_url=url, timeout=10, headers=headers) as http:
        encoded = http.post("/codec/encode", json=body)
        assert encoded.status_code == 200, encoded.text
        assert encoded.headers["access-control-allow-origin"] == UI_ORIGIN
        [sealed] = encoded.json()["payloads"]
        assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING
        assert base64.b64decode(sealed["metadata"][KEY_ID]) == b"k1"
        assert SECRET.encode() not in base64.b64decode(sealed["data"])

        decoded = http.post("/codec/decode", json=encoded.json())
        assert decoded.status_code == 200, decoded.text
        assert decoded.json() == body

        # payloads written before encryption was on come back as they are
        assert http.post("/codec/decode", json=body).json() == body
        assert http.post("/codec/decode", content=b"not json").status_code == 400


async def test_codec_server_decodes_what_workers_encrypt(codec_server: tuple[str, str]) -> None:
    url, keys = codec_server
    [sealed] = await AesGcmCodec(parse_keys(keys)).encode([plain(SECRET)])
    body = {"payloads": [{"metadata": {k: base64.b64encode(v).decode()
                                       for k, v in sealed.metadata.items()},
                          "data": base64.b64encode(sealed.data).decode()}]}  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        decoded = (await http.post("/codec/decode", json=body)).json()["payloads"][0]
    assert base64.b64decode(decoded["data"]) == plain(SECRET).data

    [unknown] = await AesGcmCodec(parse_keys(f"other={new_key()}")).encode([plain(SECRET)])
    body["payloads"][0]["metadata"][KEY_ID] = base64.b64encode(b"other").decode()
    body["payloads"][0]["data"] = base64.b64encode(unknown.data).decode()
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        refused = await http.post("/codec/decode", json=body)
    assert refused.status_code == 400
    assert "unknown key id 'other'" in refused.json()["detail"]


def preflight(url: str, path: str, origin: str) -> httpx.Response:
    return httpx.options(
        url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        },
        timeout=10,
    )


def test_cors_allows_only_the_ui_and_only_the_codec(codec_server: tuple[str, str]) -> None:
    url, _ = codec_server
    allowed = preflight(url, "/codec/decode", UI_ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == UI_ORIGIN
    assert "x-namespace" in allowed.headers["access-control-allow-headers"].lower()

    other = preflight(url, "/codec/decode", "http://evil.example")
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers

    rest = preflight(url, "/v1/encode", UI_ORIGIN)
    assert "access-control-allow-origin" not in rest.headers
