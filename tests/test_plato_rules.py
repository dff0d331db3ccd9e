"""Plato's rule language: the seed parses, every registration error points at its line and
column with a message a person understands, and expressions evaluate only what they may."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from app.plato.rules import (
    Compensate,
    Constant,
    Definition,
    DefinitionError,
    Expression,
    ExpressionError,
    Fanout,
    FunctionSchemas,
    Run,
    Sequence,
    content_version,
    definition_schema,
    evaluate,
    holds,
    parse_definition,
    roots,
)

ROOT = Path(__file__).parent.parent
SEED = ROOT.parent / "shared" / "seed" / "encode-workflow-v3.yaml"
"""The seed as printed in cosmos-trinity.md; the same text below where it is not checked out."""
SEED_TEXT = (
    SEED.read_text()
    if SEED.exists()
    else textwrap.dedent(
        """\
        # The seed's "Plato workflow definition (rule-based DSL)", as printed in cosmos-trinity.md, with the
        # indentation that the printed page lost put back. The text of every line is the seed's own.
        workflow:
          id: encode-workflow-v3
          rules:
            - when: workflow.started
              do:
                - probe-source

            - when: probe-source.completed
              do:
                - fanout:
                    for: each profile in input.profiles
                    run: encode-segment

            - when: all encode-segment.completed
              do:
                - mux-final
                - publish-manifest

            - when: any.failed
              retry:
                max: 3
                backoff: exponential
                onExhausted:
                  - notify-oncall
        """  # noqa: E501
    )
)


# --- the steps, as pydantic models (their JSON Schemas are what registration sees) -----------


class VideoInfo(BaseModel):
    codec: str
    width: int
    height: int


class AudioInfo(BaseModel):
    codec: str
    channels: int


class ProbeResult(BaseModel):
    container: str
    duration_s: float
    video: VideoInfo
    audio: AudioInfo | None = None
    audio_streams: list[AudioInfo] = []
    streams: list[str] = []
    tags: dict[str, str] = {}


class ProbeInput(BaseModel):
    source: str


class EncodeInput(BaseModel):
    profile: str
    source: str
    probe: ProbeResult


class Rendition(BaseModel):
    uri: str
    profile: str
    bitrate_kbps: int


class MuxInput(BaseModel):
    videos: list[Rendition]
    probe: ProbeResult
    source: str


class Package(BaseModel):
    package: str
    renditions: list[Rendition]


class PublishInput(BaseModel):
    package: str
    destination: str | None = None


class Published(BaseModel):
    manifest: str


class NotifyInput(BaseModel):
    error: str | None = None


class Notified(BaseModel):
    sent: bool


class ThumbnailInput(BaseModel):
    source: str
    at_s: float = 10.0


class Thumbnail(BaseModel):
    uri: str


class StripInput(BaseModel):
    thumbnails: list[Thumbnail]
    destination: str


class RemoveInput(BaseModel):
    destination: str


def _schemas(
    name: str, given: type[BaseModel], made: type[BaseModel], **consumes: str
) -> FunctionSchemas:
    return FunctionSchemas(
        name=name,
        input_schema=given.model_json_schema(),
        output_schema=made.model_json_schema(),
        consumes=consumes,
    )


FUNCTIONS = {
    f.name: f
    for f in [
        _schemas("probe-source", ProbeInput, ProbeResult),
        _schemas("encode-segment", EncodeInput, Rendition, probe="probe-source"),
        _schemas("mux-final", MuxInput, Package, videos="encode-segment", probe="probe-source"),
        _schemas("publish-manifest", PublishInput, Published, package="mux-final"),
        _schemas("notify-oncall", NotifyInput, Notified),
        _schemas("extract-thumbnail", ThumbnailInput, Thumbnail),
        _schemas("build-strip", StripInput, Thumbnail, thumbnails="extract-thumbnail"),
        _schemas("remove-outputs", RemoveInput, Notified),
    ]
}


def parse(text: str, **kwargs: Any) -> Definition:
    return parse_definition(textwrap.dedent(text), FUNCTIONS, **kwargs)


def strip_positions(value: Any) -> Any:
    """The model without line/column: the same rules written in another layout."""
    if isinstance(value, dict):
        return {k: strip_positions(v) for k, v in value.items() if k not in ("line", "column")}
    if isinstance(value, list):
        return [strip_positions(v) for v in value]
    return value


# --- the seed ------------------------------------------------------------------------------


def test_the_seed_parses_as_written() -> None:
    definition = parse_definition(SEED_TEXT, FUNCTIONS)
    assert definition.id == "encode-workflow-v3"
    assert definition.max_firings == 2000
    assert definition.inputs is None
    started, probed, encoded, failed = definition.rules
    assert started.when.kind == "started" and started.do == [
        Run(line=8, column=11, step="probe-source")
    ]
    assert (probed.when.kind, probed.when.step) == ("completed", "probe-source")
    (fanout,) = probed.do
    assert isinstance(fanout, Fanout)
    assert (fanout.var, fanout.items.text, fanout.run) == (
        "profile",
        "input.profiles",
        "encode-segment",
    )
    assert (fanout.items.line, fanout.items.column) == (13, 34)
    assert (encoded.when.kind, encoded.when.step) == ("all_completed", "encode-segment")
    assert [a.step for a in encoded.do if isinstance(a, Run)] == ["mux-final", "publish-manifest"]
    assert failed.when.kind == "any_failed" and failed.do == []
    assert failed.retry is not None
    assert (failed.retry.max, failed.retry.backoff) == (3, "exponential")
    assert [a.step for a in failed.retry.on_exhausted if isinstance(a, Run)] == ["notify-oncall"]


def test_the_seed_parses_with_its_inputs_declared_and_every_input_filled() -> None:
    text = SEED_TEXT.replace("  rules:", "  inputs: [source, profiles]\n  rules:", 1)
    definition = parse_definition(text, FUNCTIONS)
    assert definition.inputs == ["source", "profiles"]


def test_the_seed_parses_against_the_run_inputs_the_caller_knows() -> None:
    parse_definition(SEED_TEXT, FUNCTIONS, inputs=["source", "profiles"])
    with pytest.raises(DefinitionError) as caught:
        parse_definition(SEED_TEXT, FUNCTIONS, inputs=["profiles"])
    messages = [e.message for e in caught.value.errors]
    assert any("probe-source needs `source`" in m for m in messages)


def test_version_is_the_content_hash() -> None:
    definition = parse_definition(SEED_TEXT, FUNCTIONS)
    assert definition.version == content_version(SEED_TEXT)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", definition.version)
    again = parse_definition(SEED_TEXT, FUNCTIONS)
    assert again.version == definition.version
    changed = parse_definition(SEED_TEXT + "\n# a comment changes the version\n", FUNCTIONS)
    assert changed.version != definition.version
    assert definition.text == SEED_TEXT


def test_definition_round_trips_through_json() -> None:
    definition = parse(SECOND_EXAMPLE)
    again = Definition.model_validate_json(definition.model_dump_json(by_alias=True))
    assert again == definition
    seed = parse_definition(SEED_TEXT, FUNCTIONS)
    assert Definition.model_validate_json(seed.model_dump_json(by_alias=True)) == seed
    assert Definition.model_validate_json(seed.model_dump_json()) == seed


def test_on_exhausted_inside_and_beside_retry_is_the_same_definition() -> None:
    inside = parse_definition(SEED_TEXT, FUNCTIONS)
    beside_text = SEED_TEXT.replace(
        "        onExhausted:\n          - notify-oncall",
        "      onExhausted:\n        - notify-oncall",
    )
    assert beside_text != SEED_TEXT
    beside = parse_definition(beside_text, FUNCTIONS)
    assert strip_positions(inside.model_dump()["rules"]) == strip_positions(
        beside.model_dump()["rules"]
    )


SECOND_EXAMPLE = """\
workflow:
  id: thumbnail-strips-v1
  inputs: [sources, destination]
  max_firings: 500
  rules:
    - when: workflow.started
      do:
        - compensate: remove-outputs
        - fanout:
            for: each source in input.sources
            run: extract-thumbnail
            with:
              at_s: 12.5
            max_parallel: 4

    - when: all extract-thumbnail.completed
      do:
        - build-strip

    - when: extract-thumbnail.failed
      retry:
        max: 5
        backoff: fixed
        initial_interval: 2s

    - when: any.failed
      do:
        - notify-oncall
"""


def test_the_second_example_parses_to_its_parts() -> None:
    definition = parse(SECOND_EXAMPLE)
    compensate, fanout = definition.rules[0].do
    assert isinstance(compensate, Compensate) and compensate.step == "remove-outputs"
    assert isinstance(fanout, Fanout)
    assert fanout.max_parallel == 4
    assert fanout.with_ == {"at_s": Constant(line=13, column=21, value=12.5)}
    retry = definition.rules[2].retry
    assert retry is not None
    assert (retry.max, retry.backoff, retry.initial_interval_s) == (5, "fixed", 2.0)
    assert definition.max_firings == 500


def test_actions_of_every_form() -> None:
    definition = parse(
        """\
        workflow:
          id: forms
          rules:
            - when: workflow.started
              do:
                - sequence:
                    - probe-source
                    - run: publish-manifest
                      with:
                        package: input.package
                        destination: "'s3://bucket/out'"
                - parallel: [notify-oncall]
                - [notify-oncall]
                - compensate:
                    step: notify-oncall
                    with: {error: "'rolled back'"}
            - when: probe-source.completed
              if: steps.probe-source.output.duration_s > 60 and input.flag != null
              do: notify-oncall
        """
    )
    sequence, parallel, nested, compensate = definition.rules[0].do
    assert isinstance(sequence, Sequence)
    run = sequence.actions[1]
    assert isinstance(run, Run) and run.step == "publish-manifest"
    assert run.with_["package"] == Expression(line=10, column=26, text="input.package")
    assert parallel.kind == nested.kind == "parallel"
    assert isinstance(compensate, Compensate)
    assert compensate.with_["error"].kind == "expression"
    condition = definition.rules[1].if_
    assert condition is not None and condition.text.startswith("steps.probe-source")


def test_the_docs_examples_parse() -> None:
    docs = (ROOT / "docs" / "plato.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", docs, re.S)
    definitions = [b for b in blocks if b.startswith("workflow:")]
    assert len(definitions) >= 2
    for block in definitions:
        parse_definition(block, FUNCTIONS)


def test_max_firings_from_settings_and_per_definition() -> None:
    assert parse_definition(SEED_TEXT, FUNCTIONS, max_firings_default=50).max_firings == 50
    text = SEED_TEXT.replace("  rules:", "  max_firings: 9000\n  rules:", 1)
    assert parse_definition(text, FUNCTIONS).max_firings == 9000
    with pytest.raises(DefinitionError, match="max_firings must be 1 to 5000, not 9000"):
        parse_definition(text, FUNCTIONS, max_firings_ceiling=5000)


# --- the registration errors, each where it is -------------------------------------------------

HEAD = """\
workflow:
  id: t
  rules:
    - when: workflow.started
      do:
        - probe-source
"""
"""Lines 1-6; the cases below add from line 7 on."""

BROKEN: list[tuple[str, str, int, int, str]] = [
    (
        "yaml syntax",
        "workflow:\n  id: t\n  rules:\n    - when: workflow.started: now\n",
        4,
        29,
        "not valid YAML: mapping values are not allowed here",
    ),
    (
        "yaml tab",
        "workflow:\n\tid: t\n",
        2,
        1,
        "indent with spaces, not tabs",
    ),
    (
        "unknown step, with a suggestion",
        HEAD.replace("- probe-source", "- probe-sorce"),
        6,
        11,
        "unknown step `probe-sorce`: did you mean `probe-source`?",
    ),
    (
        "unknown step in an event",
        HEAD + "    - when: all encode-segmnt.completed\n      do: [mux-final]\n",
        7,
        17,
        "unknown step `encode-segmnt`: did you mean `encode-segment`?",
    ),
    (
        "unknown event form",
        HEAD + "    - when: probe-source.finished\n      do: [notify-oncall]\n",
        7,
        13,
        "`probe-source.finished` is not an event: did you mean `probe-source.completed`?",
    ),
    (
        "all without a step",
        HEAD + "    - when: all.completed\n      do: [notify-oncall]\n",
        7,
        13,
        "`all` needs the fanned-out step: `all <step>.completed`",
    ),
    (
        "all on failures",
        HEAD + "    - when: all probe-source.failed\n      do: [notify-oncall]\n",
        7,
        13,
        "`all` waits for completions only",
    ),
    (
        "workflow.completed",
        HEAD + "    - when: workflow.completed\n      do: [notify-oncall]\n",
        7,
        13,
        "the only workflow event is `workflow.started`",
    ),
    (
        "a rule that can never fire",
        HEAD + "    - when: mux-final.completed\n      do: [publish-manifest]\n",
        7,
        13,
        "`mux-final.completed` can never fire: no rule runs mux-final",
    ),
    (
        "a rule behind a rule that can never fire",
        HEAD
        + "    - when: mux-final.completed\n      do: [publish-manifest]\n"
        + "    - when: publish-manifest.completed\n      do: [notify-oncall]\n",
        9,
        13,
        "publish-manifest runs only from rules that can never fire themselves (line 7)",
    ),
    (
        "a compensation fires nothing",
        HEAD.replace("- probe-source", "- probe-source\n        - compensate: notify-oncall")
        + "    - when: notify-oncall.completed\n      do: [mux-final]\n",
        8,
        13,
        "notify-oncall runs only as a compensation",
    ),
    (
        "no workflow.started",
        "workflow:\n  id: t\n  rules:\n    - when: probe-source.completed\n      do: [mux-final]\n",
        3,
        3,
        "no rule has `when: workflow.started`",
    ),
    (
        "all X where X is never fanned out",
        HEAD + "    - when: all probe-source.completed\n      do: [notify-oncall]\n",
        7,
        13,
        "no rule fans it out; it runs once, so write `probe-source.completed`",
    ),
    (
        "a loop with no way out",
        HEAD
        + "    - when: probe-source.completed\n      do: [notify-oncall]\n"
        + "    - when: notify-oncall.completed\n      do: [probe-source]\n",
        7,
        7,
        "these rules loop with no way out: `probe-source.completed` (line 7) runs "
        "notify-oncall; `notify-oncall.completed` (line 9) runs probe-source",
    ),
    (
        "a step that starts itself",
        HEAD + "    - when: probe-source.completed\n      do: [probe-source]\n",
        7,
        7,
        "add an `if:` to one of these rules",
    ),
    (
        "fanout without for",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            run: encode-segment\n",
        9,
        11,
        "a fan-out needs `for: each <name> in <expression>`",
    ),
    (
        "fanout without run",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each profile in input.profiles\n",
        9,
        11,
        "a fan-out needs `run: <step>`",
    ),
    (
        "fanout keys not indented under it (the seed as printed)",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "          for: each profile in input.profiles\n          run: encode-segment\n",
        10,
        11,
        "`for:` belongs under `fanout:`: indent it two more spaces",
    ),
    (
        "a malformed for",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: profile in input.profiles\n            run: encode-segment\n",
        10,
        18,
        "`for:` reads `each <name> in <expression>`",
    ),
    (
        "a fan-out variable named after a root",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each input in input.profiles\n            run: encode-segment\n",
        10,
        23,
        "`input` cannot name a fan-out variable",
    ),
    (
        "a fan-out variable nothing reads",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each p in input.profiles\n            run: encode-segment\n",
        9,
        11,
        "the fan-out variable `p` reaches no input of encode-segment",
    ),
    (
        "an expression with an unknown root",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each profile in env.HOME\n            run: encode-segment\n",
        10,
        34,
        "unknown name `env` (an expression starts from `input.`, `steps.<step>.output.`)",
    ),
    (
        "__import__ as a root",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each profile in __import__\n            run: encode-segment\n",
        10,
        34,
        "unknown name `__import__`",
    ),
    (
        "__import__ called",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: \"each profile in __import__('os')\"\n            run: encode-segment\n",
        10,
        35,
        "unknown function `__import__`: the functions are len() and range()",
    ),
    (
        "an unknown output property",
        HEAD + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each profile in steps.probe-source.output.videos\n"
        "            run: encode-segment\n",
        10,
        60,
        "`steps.probe-source.output` has no `videos`: did you mean `video`?",
    ),
    (
        "an unknown nested property",
        HEAD
        + "    - when: probe-source.completed\n      if: steps.probe-source.output.video.fps > 24\n"
        "      do: [notify-oncall]\n",
        8,
        43,
        "`steps.probe-source.output.video` has no `fps`",
    ),
    (
        "a property of an optional model",
        HEAD + "    - when: probe-source.completed\n"
        "      if: steps.probe-source.output.audio.channel == 2\n      do: [notify-oncall]\n",
        8,
        43,
        "`steps.probe-source.output.audio` has no `channel`: did you mean `channels`?",
    ),
    (
        "a step's output without .output",
        HEAD + "    - when: probe-source.completed\n      if: steps.probe-source.duration_s > 1\n"
        "      do: [notify-oncall]\n",
        8,
        30,
        "`steps.probe-source` has only `.output`",
    ),
    (
        "an undeclared input",
        HEAD.replace("  rules:", "  inputs: [source]\n  rules:")
        + "    - when: probe-source.completed\n      if: input.profile == 'x'\n"
        "      do: [notify-oncall]\n",
        9,
        17,
        "`input.profile` is not in the definition's inputs",
    ),
    (
        "a step input no one fills",
        HEAD.replace("  rules:", "  inputs: [source, profiles]\n  rules:")
        + "    - when: probe-source.completed\n      do: [publish-manifest]\n",
        9,
        12,
        "publish-manifest needs `package`; it takes it from mux-final's output, but no rule "
        "runs mux-final",
    ),
    (
        "a fan-out's step input no one fills",
        HEAD.replace("  rules:", "  inputs: [profiles]\n  rules:")
        + "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each profile in input.profiles\n            run: encode-segment\n",
        12,
        18,
        "encode-segment needs `source`; nothing fills it",
    ),
    (
        "a with: key the step does not take",
        HEAD + "    - when: probe-source.completed\n      do:\n        - run: publish-manifest\n"
        "          with: {pakage: input.p}\n",
        10,
        18,
        "publish-manifest takes no input `pakage`: did you mean `package`?",
    ),
    (
        "a with: expression that does not parse",
        HEAD + "    - when: probe-source.completed\n      do:\n        - run: publish-manifest\n"
        "          with: {package: input.p +}\n",
        10,
        35,
        "unexpected character '+'",
    ),
    (
        "max_firings above the ceiling",
        HEAD.replace("  rules:", "  max_firings: 200000\n  rules:"),
        3,
        16,
        "max_firings must be 1 to 100000, not 200000",
    ),
    (
        "max_firings of nothing",
        HEAD.replace("  rules:", "  max_firings: 0\n  rules:"),
        3,
        16,
        "max_firings must be 1 to 100000, not 0",
    ),
    (
        "a bad backoff",
        HEAD + "    - when: any.failed\n      retry:\n        backoff: linear\n",
        9,
        18,
        "backoff is `fixed` or `exponential`, not `linear`",
    ),
    (
        "retry max out of range",
        HEAD + "    - when: any.failed\n      retry: {max: 0}\n",
        8,
        20,
        "`retry: max` (attempts in all) must be 1 to 100, not 0",
    ),
    (
        "a bad interval",
        HEAD + "    - when: any.failed\n      retry: {initial_interval: soon}\n",
        8,
        33,
        "initial_interval is a duration such as 2s, 500ms or 1m",
    ),
    (
        "retry on a completion",
        HEAD + "    - when: probe-source.completed\n      retry: {max: 2}\n      do: [mux-final]\n",
        8,
        7,
        "`retry:` belongs to a failure rule",
    ),
    (
        "two retries for the same steps",
        HEAD + "    - when: any.failed\n      retry: {max: 2}\n"
        "    - when: any.failed\n      retry: {max: 4}\n",
        10,
        7,
        "a second retry for `any.failed` (the first is at line 7)",
    ),
    (
        "onExhausted inside and beside retry",
        HEAD + "    - when: any.failed\n      retry:\n        onExhausted: [notify-oncall]\n"
        "      onExhausted: [notify-oncall]\n",
        10,
        7,
        "`onExhausted:` is given both inside `retry:` (line 9) and beside it",
    ),
    (
        "onExhausted without retry",
        HEAD + "    - when: any.failed\n      onExhausted: [notify-oncall]\n",
        8,
        7,
        "give the rule a `retry:` too",
    ),
    (
        "a misspelt rule key",
        HEAD + "    - when: any.failed\n      retries: {max: 2}\n",
        8,
        7,
        "unknown key `retries` in a rule: did you mean `retry`?",
    ),
    (
        "a key given twice",
        HEAD
        + "    - when: any.failed\n      when: probe-source.failed\n      do: [notify-oncall]\n",
        8,
        7,
        "`when` is given twice in a rule (first at line 7)",
    ),
    (
        "an unknown action",
        HEAD + "    - when: any.failed\n      do:\n        - fan-out: {}\n",
        9,
        11,
        "unknown action `fan-out` (an action is a step name, or one of fanout:, sequence:, "
        "parallel:, compensate:, run:): did you mean `fanout`?",
    ),
    (
        "two actions in one item",
        HEAD
        + "    - when: any.failed\n      do:\n        - run: mux-final\n          sequence: []\n",
        9,
        11,
        "one action per list item",
    ),
    (
        "an anchor",
        HEAD.replace("id: t", "id: &name t"),
        2,
        7,
        "anchors (&name) are not allowed",
    ),
    (
        "an alias",
        HEAD.replace("- probe-source", "- &p probe-source\n        - *p"),
        6,
        11,
        "anchors (&p) are not allowed",
    ),
    (
        "a bare alias",
        "x: 1\nworkflow: *x\n",
        2,
        11,
        "aliases (*x) are not allowed",
    ),
    (
        "a tag",
        HEAD.replace("id: t", "id: !!python/object/apply:os.system [ls]"),
        2,
        7,
        "tags (tag:yaml.org,2002:python/object/apply:os.system) are not allowed",
    ),
    (
        "no workflow key",
        "rules: []\n",
        1,
        1,
        "the definition starts with `workflow:`",
    ),
    (
        "an empty text",
        "",
        1,
        1,
        "the definition is empty",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        pytest.param(text, line, column, fragment, id=name)
        for name, text, line, column, fragment in BROKEN
    ],
)
def test_a_broken_definition_is_refused_where_it_is_broken(
    text: str, line: int, column: int, fragment: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, FUNCTIONS)
    found = [(e.line, e.column, e.message) for e in caught.value.errors]
    assert any(
        (e_line, e_column) == (line, column) and fragment in message
        for e_line, e_column, message in found
    ), found


def test_every_error_is_reported_in_order() -> None:
    text = HEAD.replace("- probe-source", "- probe-sorce\n        - mux-fnal") + (
        "    - when: any.failed\n      retry: {backoff: linear, max: 500}\n"
    )
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, FUNCTIONS)
    errors = caught.value.errors
    assert [(e.line, e.column) for e in errors] == [(6, 11), (7, 11), (9, 24), (9, 37)]
    assert "line 6, column 11: unknown step `probe-sorce`" in str(caught.value)


def test_a_text_over_the_limit_is_refused_before_yaml_reads_it() -> None:
    text = SEED_TEXT + "#" * (256 * 1024)
    with pytest.raises(DefinitionError, match="over 256 KiB"):
        parse_definition(text, FUNCTIONS)


def test_a_deeply_nested_text_is_refused() -> None:
    text = "workflow: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(DefinitionError):
        parse_definition(text, FUNCTIONS)


def test_a_loop_with_a_condition_has_a_way_out() -> None:
    parse(
        HEAD
        + "    - when: probe-source.completed\n      do: [notify-oncall]\n"
        + "    - when: notify-oncall.completed\n"
        + "      if: steps.notify-oncall.output.sent == false\n"
        + "      do: [probe-source]\n"
    )


def test_a_retry_loop_through_failure_has_a_way_out() -> None:
    parse(HEAD + "    - when: probe-source.failed\n      do: [probe-source]\n")


# --- the JSON Schema ------------------------------------------------------------------------


def test_the_schema_is_valid_and_the_seed_and_examples_conform() -> None:
    schema = definition_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for text in (SEED_TEXT, SECOND_EXAMPLE):
        validator.validate(yaml.safe_load(text))
    beside = SEED_TEXT.replace(
        "        onExhausted:\n          - notify-oncall",
        "      onExhausted:\n        - notify-oncall",
    )
    validator.validate(yaml.safe_load(beside))
    json.dumps(schema)  # served as JSON


@pytest.mark.parametrize(
    "broken",
    [
        {"workflow": {"id": "t"}},
        {"workflow": {"id": "t", "rules": [{"when": "probe.finished", "do": ["a"]}]}},
        {"workflow": {"id": "t", "rules": [{"when": "workflow.started"}]}},
        {"workflow": {"id": "t", "rules": [{"when": "any.failed", "retry": {"backoff": "x"}}]}},
        {
            "workflow": {
                "id": "t",
                "rules": [{"when": "workflow.started", "do": [{"fanout": {"run": "a"}}]}],
            }
        },
    ],
)
def test_the_schema_refuses_shapes_registration_refuses(broken: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(definition_schema())
    assert not validator.is_valid(broken)


def test_the_schema_names_the_steps_there_are() -> None:
    validator = jsonschema.Draft202012Validator(definition_schema(FUNCTIONS))
    validator.validate(yaml.safe_load(SEED_TEXT))
    assert not validator.is_valid(yaml.safe_load(SEED_TEXT.replace("- probe-source", "- probe")))
    assert not validator.is_valid(
        yaml.safe_load(SEED_TEXT.replace("all encode-segment", "all encode"))
    )


# --- expressions ----------------------------------------------------------------------------

CONTEXT: dict[str, Any] = {
    "input": {"profiles": ["1080p", "720p"], "source": "s3://in/a.mov", "n": 3, "flag": True},
    "steps": {
        "probe-source": {
            "output": {
                "duration_s": 62.5,
                "video": {"width": 1920, "height": 1080},
                "audio": None,
                "tags": {"title": "Trailer"},
            }
        }
    },
    "profile": {"name": "1080p", "height": 1080},
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("input.source", "s3://in/a.mov"),
        ("input.profiles[0]", "1080p"),
        ("input.profiles[-1]", "720p"),
        ("steps.probe-source.output.duration_s", 62.5),
        ("steps.probe-source.output.video.width", 1920),
        ("steps.probe-source.output['tags']['title']", "Trailer"),
        ("steps.probe-source.output.audio", None),
        ("profile.name", "1080p"),
        ("profile['height'] >= 720", True),
        ("steps.probe-source.output.duration_s > 60 and input.n == 3", True),
        ("steps.probe-source.output.audio == null or false", True),
        ("not input.flag", False),
        ("'720p' in input.profiles", True),
        ("'480p' not in input.profiles", True),
        ("'title' in steps.probe-source.output.tags", True),
        ("'s3' in input.source", True),
        ("len(input.profiles)", 2),
        ("range(input.n)", [0, 1, 2]),
        ("range(2, 4)", [2, 3]),
        ("[1, 'a', true, null, -2.5]", [1, "a", True, None, -2.5]),
        ("1 == true", False),
        ("1 == 1.0", True),
        ("'a' < 'b'", True),
        ("(1 < 2) == (2 < 3)", True),
        ('"it\\"s"', 'it"s'),
    ],
)
def test_expressions_evaluate(text: str, value: Any) -> None:
    assert evaluate(text, CONTEXT) == value


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("__import__('os')", 1, "unknown function `__import__`"),
        ("eval('1')", 1, "unknown function `eval`"),
        ("input.source.upper()", 19, "only len() and range() can be called"),
        ("input.__class__", 7, "`input` has no `__class__`"),
        ("env.HOME", 1, "unknown name `env`"),
        ("input.source + 'x'", 14, "unexpected character '+'"),
        ("input.profiles[len(input.profiles) - 1]", 36, "expected ']'"),  # `-` is a sign only
        ("input.n = 3", 9, "(compare with ==)"),
        ("lambda: 1", 7, "unexpected character ':'"),
        ("1 < 2 < 3", 7, "comparisons do not chain"),
        ("input.profiles[5]", 16, "index 5 is out of range"),
        ("input.profiles['a']", 16, "a list is indexed by a whole number"),
        ("input.n < 'a'", 1, "cannot order a number against a string"),
        ("input.source.x", 14, "`input.source` is a string, it has no field `x`"),
        ("steps.probe-source.output.audio.codec", 33, "is null, it has no field `codec`"),
        ("range(100000)", 1, "range() of more than 10000"),
        ("'open", 1, "string not closed"),
        ("", 1, "empty expression"),
        ("input.", 7, "expected a name after '.'"),
        ("(" * 100 + "1" + ")" * 100, 49, "nested too deeply"),
        ("not " * 100 + "true", 189, "nested too deeply"),
        ("x" * 2001, 1, "longer than 2000"),
    ],
)
def test_expressions_refuse_anything_else(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate(text, CONTEXT)
    assert fragment in caught.value.message
    assert caught.value.column == column


def test_roots_and_conditions() -> None:
    assert roots("steps.probe-source.output.video.width > input.min and profile.h") == {
        "steps",
        "input",
        "profile",
    }
    assert roots("len(input.profiles) > 1") == {"input"}
    assert holds("input.profiles", CONTEXT) is True
    assert holds("steps.probe-source.output.audio", CONTEXT) is False


def test_a_fan_out_variable_is_checked_against_the_items_it_takes() -> None:
    text = HEAD + (
        "    - when: probe-source.completed\n      do:\n        - fanout:\n"
        "            for: each stream in steps.probe-source.output.audio_streams\n"
        "            run: notify-oncall\n"
        "            with: {error: stream.codex}\n"
    )
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, FUNCTIONS)
    (issue,) = caught.value.errors
    assert (issue.line, issue.column) == (12, 34)
    assert issue.message == "`stream` has no `codex`: did you mean `codec`?"
    parse_definition(text.replace("codex", "codec"), FUNCTIONS)


def test_declared_inputs_must_be_fields_of_the_run_input() -> None:
    text = SEED_TEXT.replace("  rules:", "  inputs: [source, profile]\n  rules:", 1)
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, FUNCTIONS, inputs=["source", "profiles"])
    issue = caught.value.errors[0]
    assert (issue.line, issue.column) == (5, 20)
    assert "`profile` is not a field of the run input: did you mean `profiles`?" in issue.message
