"""Reading a Plato definition from YAML, with the line and column of every problem in it.

The YAML is composed into nodes (``yaml.compose`` keeps each node's position) rather than
loaded, so that a message can point at the character that is wrong, and so that anything
beyond plain YAML (anchors, aliases, tags: the way to a YAML bomb or to objects) is refused
before it is built. Every problem found is reported, not just the first: a person fixing a
definition should see them all at once.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from app.plato.rules.expressions import FUNCTIONS, KEYWORDS, roots
from app.plato.rules.model import (
    Action,
    Argument,
    Compensate,
    Constant,
    Definition,
    Event,
    Expression,
    Fanout,
    Parallel,
    Retry,
    Rule,
    Run,
    Sequence,
)
from app.plato.rules.validate import (
    DefinitionError,
    DefinitionIssue,
    FunctionSchemas,
    Layout,
    SchemaRef,
    check_expression,
    did_you_mean,
    item_schema_of,
    validate_definition,
)

__all__ = ["DefinitionError", "DefinitionIssue", "content_version", "parse_definition"]

MAX_BYTES = 256 * 1024
"""A definition is a page of rules; anything larger is refused before YAML reads it."""

Pos = tuple[int, int]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_STEP = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
_EVENT = re.compile(rf"(?P<step>{_STEP})\.(?P<what>[A-Za-z_]+)")
_ALL = re.compile(rf"all\s+(?P<step>{_STEP})\.(?P<what>[A-Za-z_]+)")
_FOR = re.compile(r"\s*each\s+(?P<var>[A-Za-z_][A-Za-z0-9_]*)\s+in\s+(?P<items>\S.*?)\s*", re.S)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORKFLOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

EVENT_FORMS = (
    "workflow.started, <step>.completed, <step>.failed, all <step>.completed or any.failed"
)
WORKFLOW_KEYS = ("id", "rules", "max_firings", "inputs")
RULE_KEYS = ("when", "if", "do", "retry", "onExhausted")
ACTION_FORMS = ("fanout", "sequence", "parallel", "compensate", "run")
FANOUT_KEYS = ("for", "run", "with", "max_parallel")
RETRY_KEYS = ("max", "backoff", "initial_interval", "onExhausted")
_SYNONYMS = {
    word: "completed"
    for word in ("finished", "done", "succeeded", "success", "complete", "ended", "ok", "end")
} | {word: "failed" for word in ("error", "errored", "failure", "fail", "crashed", "aborted")}
"""Words people write for the two outcomes a step has."""
RESERVED = KEYWORDS | FUNCTIONS | {"input", "steps", "each"}


def content_version(text: str) -> str:
    """The version of a definition is its content: the same text is the same version."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_definition(
    text: str,
    functions: Mapping[str, FunctionSchemas],
    *,
    max_firings_default: int = 2000,
    max_firings_ceiling: int = 100_000,
    inputs: Iterable[str] | None = None,
) -> Definition:
    """Parse and check a definition against the steps there are; raise ``DefinitionError``
    with every problem found (line, column, message), sorted by position.

    ``inputs``, where given, are the fields the run input has: a definition's ``inputs:``
    must be among them, and without ``inputs:`` they are what fills steps' inputs by name.
    """
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise DefinitionError(
            [DefinitionIssue(1, 1, f"the definition is over {MAX_BYTES // 1024} KiB")]
        )
    root = _compose(text)
    builder = _Builder(
        functions,
        caller_inputs=None if inputs is None else frozenset(inputs),
        max_firings_default=max_firings_default,
        max_firings_ceiling=max_firings_ceiling,
    )
    definition = builder.definition(root, text)
    if builder.issues or definition is None:
        raise DefinitionError(builder.issues)
    issues = validate_definition(
        definition, functions, inputs=builder.inputs, layout=builder.layout
    )
    if issues:
        raise DefinitionError(issues)
    return definition


# --- YAML, plain -------------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = int(mark.line) + 1 if mark is not None else 1
        self.column = int(mark.column) + 1 if mark is not None else 1
        self.message = message


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader's composer, refusing anchors, aliases and explicit tags where they start."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark,
                f"aliases (*{event.anchor}) are not allowed: write the value out where it is used",
            )
        if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
            if event.anchor is not None:
                raise _Refused(
                    event.start_mark,
                    f"anchors (&{event.anchor}) are not allowed: write each value out",
                )
            if event.tag is not None:
                raise _Refused(
                    event.start_mark, f"tags ({event.tag}) are not allowed: plain YAML only"
                )
        return super().compose_node(parent, index)


def _compose(text: str) -> Node | None:
    def refuse(line: int, column: int, message: str) -> DefinitionError:
        return DefinitionError([DefinitionIssue(line, column, message)])

    try:
        return yaml.compose(text, Loader=_PlainLoader)
    except _Refused as e:
        raise refuse(e.line, e.column, e.message) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "cannot be read"
        if "\t" in problem or "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        if e.context and e.context_mark is not None and e.context_mark is not mark:
            problem += (
                f" ({e.context} at line {e.context_mark.line + 1}, column "
                f"{e.context_mark.column + 1})"
            )
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise refuse(line, column, f"not valid YAML: {problem}") from None
    except yaml.reader.ReaderError as e:
        before = text[: int(e.position)]
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        raise refuse(line, column, f"not valid YAML: {e.reason}") from None
    except yaml.YAMLError as e:
        raise refuse(1, 1, f"not valid YAML: {e}") from None
    except RecursionError:
        raise refuse(1, 1, "the definition is nested too deeply") from None


def _at(node: Node) -> Pos:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _at_offset(node: Node, offset: int) -> Pos:
    """Where the ``offset``-th character of a scalar's value is, where that can be known."""
    line, column = _at(node)
    if isinstance(node, ScalarNode) and node.start_mark.line == node.end_mark.line:
        if node.style is None:
            return line, column + offset
        if node.style in ("'", '"'):
            return line, column + 1 + offset
    return line, column


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _STR: "a string",
        _INT: "a number",
        _FLOAT: "a number",
        _BOOL: "a boolean",
        _NULL: "nothing",
    }.get(node.tag, "a value")


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


# --- the builder -------------------------------------------------------------------------------


Entries = dict[str, tuple[ScalarNode, Node]]


class _Builder:
    """Builds the model while collecting problems; a part with a problem is left out."""

    def __init__(
        self,
        functions: Mapping[str, FunctionSchemas],
        *,
        caller_inputs: frozenset[str] | None,
        max_firings_default: int,
        max_firings_ceiling: int,
    ) -> None:
        self.functions = functions
        self.caller_inputs = caller_inputs
        self.inputs: frozenset[str] | None = caller_inputs
        self.max_firings_default = max_firings_default
        self.max_firings_ceiling = max_firings_ceiling
        self.issues: list[DefinitionIssue] = []
        self.layout = Layout()
        self.constructor = SafeConstructor()

    def error(self, at: Pos, message: str) -> None:
        self.issues.append(DefinitionIssue(at[0], at[1], message))

    # --- generic shapes

    def mapping(self, node: Node, what: str) -> Entries | None:
        if not isinstance(node, MappingNode):
            self.error(
                _at(node), f"{what} must be a mapping (`key: value` lines), not {_kind(node)}"
            )
            return None
        out: Entries = {}
        for key, value in node.value:
            if not isinstance(key, ScalarNode):
                self.error(_at(key), f"keys in {what} are plain names, not {_kind(key)}")
                continue
            name = str(key.value)
            if name in out:
                first = out[name][0].start_mark.line + 1
                self.error(_at(key), f"`{name}` is given twice in {what} (first at line {first})")
                continue
            out[name] = (key, value)
        return out

    def unknown_keys(self, entries: Entries, allowed: Iterable[str], what: str) -> None:
        allowed = tuple(allowed)
        for name, (key, _) in entries.items():
            if name not in allowed:
                self.error(
                    _at(key),
                    f"unknown key `{name}` in {what}{did_you_mean(name, allowed)} "
                    f"(keys: {', '.join(allowed)})",
                )

    def string(self, node: Node, what: str) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _STR and str(node.value).strip():
            return str(node.value)
        self.error(_at(node), f"{what} must be a string, not {_kind(node)}")
        return None

    def integer(self, node: Node, what: str, low: int, high: int | None = None) -> int | None:
        if not (isinstance(node, ScalarNode) and node.tag == _INT):
            self.error(_at(node), f"{what} must be a whole number, not {_kind(node)}")
            return None
        value = int(self.constructor.construct_object(node))
        if value < low or (high is not None and value > high):
            bound = f"{low} to {high}" if high is not None else f"at least {low}"
            self.error(_at(node), f"{what} must be {bound}, not {value}")
            return None
        return value

    def step_name(self, name: str, node: Node, offset: int = 0) -> bool:
        if name in self.functions:
            return True
        hint = did_you_mean(name, self.functions)
        if not hint and len(self.functions) <= 12:
            hint = f" (steps: {', '.join(sorted(self.functions)) or 'none'})"
        self.error(_at_offset(node, offset), f"unknown step `{name}`{hint}")
        return False

    # --- the definition

    def definition(self, root: Node | None, text: str) -> Definition | None:
        if root is None:
            self.error((1, 1), "the definition is empty: it starts with `workflow:`")
            return None
        top = self.mapping(root, "the definition")
        if top is None:
            return None
        if "workflow" not in top:
            self.error(_at(root), "the definition starts with `workflow:` (its id and rules)")
            return None
        self.unknown_keys(top, ("workflow",), "the definition")
        workflow_node = top["workflow"][1]
        workflow = self.mapping(workflow_node, "`workflow:`")
        if workflow is None:
            return None
        self.unknown_keys(workflow, WORKFLOW_KEYS, "`workflow:`")
        declared = self.declared_inputs(workflow.get("inputs"))

        ident: str | None = None
        if "id" not in workflow:
            self.error(_at(workflow_node), "`workflow:` needs an `id:` (e.g. encode-workflow-v3)")
        else:
            ident = self.string(workflow["id"][1], "the workflow `id`")
            if ident is not None and not _WORKFLOW_ID.fullmatch(ident):
                self.error(
                    _at(workflow["id"][1]),
                    f"the workflow id `{ident}` may hold letters, digits, `.`, `_` and `-` "
                    "(128 at most), starting with a letter or digit",
                )

        max_firings: int | None = self.max_firings_default
        if "max_firings" in workflow:
            max_firings = self.integer(
                workflow["max_firings"][1], "max_firings", 1, self.max_firings_ceiling
            )
            if max_firings is not None and max_firings > self.max_firings_ceiling:
                max_firings = None

        rules: list[Rule] = []
        if "rules" not in workflow:
            self.error(_at(workflow_node), "`workflow:` needs `rules:` (a list of when/do rules)")
        else:
            key, node = workflow["rules"]
            self.layout.rules_at = _at(key)
            if not isinstance(node, SequenceNode) or not node.value:
                self.error(_at(node), f"`rules:` must be a list of rules, not {_kind(node)}")
            else:
                for item in node.value:
                    rule = self.rule(item)
                    if rule is not None:
                        rules.append(rule)
        if self.issues or ident is None or max_firings is None:
            return None
        return Definition(
            id=ident,
            version=content_version(text),
            rules=rules,
            max_firings=max_firings,
            inputs=declared,
            text=text,
        )

    def declared_inputs(self, entry: tuple[ScalarNode, Node] | None) -> list[str] | None:
        if entry is None:
            return None
        node = entry[1]
        if not isinstance(node, SequenceNode):
            self.error(_at(node), f"`inputs:` must be a list of field names, not {_kind(node)}")
            return None
        names: list[str] = []
        for item in node.value:
            name = self.string(item, "an input name")
            if name is None:
                continue
            if not _IDENTIFIER.fullmatch(name):
                self.error(_at(item), f"`{name}` is not a field name (letters, digits and _)")
            elif name in names:
                self.error(_at(item), f"input `{name}` is listed twice")
            elif self.caller_inputs is not None and name not in self.caller_inputs:
                fields = ", ".join(sorted(self.caller_inputs)) or "none"
                self.error(
                    _at(item),
                    f"`{name}` is not a field of the run input"
                    f"{did_you_mean(name, self.caller_inputs)} (fields: {fields})",
                )
            else:
                names.append(name)
        self.inputs = frozenset(names)
        return names

    # --- rules and events

    def rule(self, node: Node) -> Rule | None:
        entries = self.mapping(node, "a rule")
        if entries is None:
            return None
        before = len(self.issues)
        self.unknown_keys(entries, RULE_KEYS, "a rule")
        event: Event | None = None
        if "when" not in entries:
            self.error(_at(node), "a rule needs `when:` (the event it fires on)")
        else:
            event = self.event(entries["when"][1])
        condition: Expression | None = None
        if "if" in entries:
            condition, _ = self.expression(entries["if"][1], "`if:`", {})
        do = self.actions(entries["do"][1], "do") if "do" in entries else []
        retry: Retry | None = None
        beside = entries.get("onExhausted")
        if "retry" in entries:
            retry = self.retry(entries["retry"], beside)
            if event is not None and event.kind not in ("failed", "any_failed"):
                self.error(
                    _at(entries["retry"][0]),
                    "`retry:` belongs to a failure rule (`<step>.failed` or `any.failed`): it "
                    "sets how the failing steps are retried",
                )
        elif beside is not None:
            self.error(
                _at(beside[0]),
                "`onExhausted:` runs once a step's retries are exhausted: give the rule a "
                "`retry:` too",
            )
        if "do" not in entries and "retry" not in entries and len(self.issues) == before:
            self.error(
                _at(node), "this rule does nothing: give it `do:` (or `retry:` on a failure event)"
            )
        if len(self.issues) > before or event is None:
            return None
        line, column = _at(node)
        return Rule(line=line, column=column, when=event, if_=condition, do=do, retry=retry)

    def event(self, node: Node) -> Event | None:
        text = self.string(node, "`when:`")
        if text is None:
            return None
        line, column = _at(node)
        if text == "workflow.started":
            return Event(line=line, column=column, kind="started")
        if text == "any.failed":
            return Event(line=line, column=column, kind="any_failed")
        if m := _ALL.fullmatch(text):
            step = m["step"]
            if m["what"] != "completed":
                self.error(
                    _at(node),
                    f"`all` waits for completions only: `all {step}.completed` (for a failure, "
                    f"`{step}.failed` or `any.failed`)",
                )
                return None
            if not self.step_name(step, node, m.start("step")):
                return None
            return Event(line=line, column=column, kind="all_completed", step=step)
        if m := _EVENT.fullmatch(text):
            step, what = m["step"], m["what"]
            if step == "workflow" and what != "started":
                message = "the only workflow event is `workflow.started`"
            elif step == "any" and what != "failed":
                message = "the only `any` event is `any.failed` (a failure of any step)"
            elif step == "all":
                message = "`all` needs the fanned-out step: `all <step>.completed`"
            elif what in ("completed", "failed"):
                if not self.step_name(step, node):
                    return None
                kind = "completed" if what == "completed" else "failed"
                return Event(line=line, column=column, kind=kind, step=step)
            else:
                meant = _SYNONYMS.get(what.lower()) or next(
                    iter(difflib.get_close_matches(what, ("completed", "failed"), 1, 0.5)), None
                )
                hint = f": did you mean `{step}.{meant}`?" if meant else ""
                message = f"`{text}` is not an event{hint}"
            self.error(_at(node), f"{message} (an event is {EVENT_FORMS})")
            return None
        self.error(_at(node), f"`{text}` is not an event (an event is {EVENT_FORMS})")
        return None

    # --- actions

    def actions(self, node: Node, what: str) -> list[Action]:
        if _is_null(node):
            self.error(_at(node), f"`{what}:` is empty: list the steps to run")
            return []
        items = node.value if isinstance(node, SequenceNode) else [node]
        if not items:
            self.error(_at(node), f"`{what}:` is empty: list the steps to run")
        out: list[Action] = []
        for item in items:
            action = self.action(item)
            if action is not None:
                out.append(action)
        return out

    def action(self, node: Node) -> Action | None:
        line, column = _at(node)
        if isinstance(node, ScalarNode):
            name = self.string(node, "an action")
            if name is None or not self.step_name(name, node):
                return None
            return Run(line=line, column=column, step=name)
        if isinstance(node, SequenceNode):
            return Parallel(line=line, column=column, actions=self.actions(node, "a parallel list"))
        entries = self.mapping(node, "an action")
        if entries is None:
            return None
        if "fanout" in entries:
            misplaced = [k for k in entries if k in FANOUT_KEYS]
            for name in misplaced:
                self.error(
                    _at(entries[name][0]),
                    f"`{name}:` belongs under `fanout:`: indent it two more spaces",
                )
            self.unknown_keys(
                {k: v for k, v in entries.items() if k not in misplaced},
                ("fanout",),
                "a `fanout:` action",
            )
            return None if misplaced else self.fanout(node, entries["fanout"])
        forms = [k for k in entries if k in ACTION_FORMS]
        if len(forms) > 1:
            self.error(
                (line, column),
                f"one action per list item: {' and '.join(f'`{f}:`' for f in forms)} share one; "
                "start each on its own `-` line",
            )
            return None
        if not forms:
            first = next(iter(entries))
            self.error(
                _at(entries[first][0]),
                f"unknown action `{first}` (an action is a step name, or one of fanout:, "
                f"sequence:, parallel:, compensate:, run:){did_you_mean(first, ACTION_FORMS)}",
            )
            return None
        form = forms[0]
        if form in ("sequence", "parallel"):
            self.unknown_keys(entries, (form,), f"a `{form}:` action")
            value = entries[form][1]
            if not isinstance(value, SequenceNode):
                self.error(_at(value), f"`{form}:` takes a list of actions, not {_kind(value)}")
                return None
            actions = self.actions(value, form)
            if form == "sequence":
                return Sequence(line=line, column=column, actions=actions)
            return Parallel(line=line, column=column, actions=actions)
        self.unknown_keys(entries, (form, "with"), f"a `{form}:` action")
        if form == "compensate":
            return self.compensate(node, entries)
        return self.run(node, entries)

    def run(self, node: Node, entries: Entries) -> Run | None:
        value = entries["run"][1]
        before = len(self.issues)
        step = self.string(value, "`run:`")
        if step is None or not self.step_name(step, value):
            return None
        arguments = self.arguments(entries.get("with"), step, {})
        if len(self.issues) > before:
            return None
        line, column = _at(node)
        action = Run(line=line, column=column, step=step, with_=arguments)
        self.layout.step_refs[id(action)] = _at(value)
        return action

    def compensate(self, node: Node, entries: Entries) -> Compensate | None:
        before = len(self.issues)
        value = entries["compensate"][1]
        with_entry = entries.get("with")
        ref: Node = value
        step: str | None = None
        if isinstance(value, MappingNode):
            inner = self.mapping(value, "`compensate:`") or {}
            self.unknown_keys(inner, ("step", "with"), "`compensate:`")
            if "with" in inner:
                if with_entry is not None:
                    self.error(_at(with_entry[0]), "`with:` is given twice for this compensation")
                with_entry = inner["with"]
            if "step" not in inner:
                self.error(_at(value), "`compensate:` needs `step:` (the step that undoes)")
            else:
                ref = inner["step"][1]
                step = self.string(ref, "the compensation's `step:`")
        else:
            step = self.string(value, "`compensate:`")
        if step is None or not self.step_name(step, ref):
            return None
        arguments = self.arguments(with_entry, step, {})
        if len(self.issues) > before:
            return None
        line, column = _at(node)
        action = Compensate(line=line, column=column, step=step, with_=arguments)
        self.layout.step_refs[id(action)] = _at(ref)
        return action

    def fanout(self, node: Node, entry: tuple[ScalarNode, Node]) -> Fanout | None:
        key, value = entry
        before = len(self.issues)
        entries = {} if _is_null(value) else self.mapping(value, "`fanout:`")
        if entries is None:
            return None
        self.unknown_keys(entries, FANOUT_KEYS, "`fanout:`")
        step: str | None = None
        run_node: Node | None = None
        if "run" not in entries:
            self.error(_at(key), "a fan-out needs `run: <step>`: the step run once per item")
        else:
            run_node = entries["run"][1]
            step = self.string(run_node, "`run:`")
            if step is not None and not self.step_name(step, run_node):
                step = None
        var: str | None = None
        items: Expression | None = None
        item_schema: SchemaRef | None = None
        if "for" not in entries:
            self.error(
                _at(key),
                "a fan-out needs `for: each <name> in <expression>` (e.g. `for: each profile in "
                "input.profiles`)",
            )
        else:
            for_node = entries["for"][1]
            text = self.string(for_node, "`for:`")
            m = _FOR.fullmatch(text) if text is not None else None
            if text is not None and m is None:
                self.error(
                    _at(for_node),
                    f"`for:` reads `each <name> in <expression>`, as in `each profile in "
                    f"input.profiles`; not `{text.strip()}`",
                )
            elif m is not None:
                var = m["var"]
                if var in RESERVED:
                    self.error(
                        _at_offset(for_node, m.start("var")),
                        f"`{var}` cannot name a fan-out variable: it is a word of the language",
                    )
                items, collection = self.expression(
                    for_node, "`for:`", {}, offset=m.start("items"), text=m["items"]
                )
                item_schema = item_schema_of(collection)
        arguments: dict[str, Argument] = {}
        if step is not None and var is not None:
            checked = len(self.issues)
            arguments = self.arguments(entries.get("with"), step, {var: item_schema})
            if var not in RESERVED and len(self.issues) == checked:
                self.variable_used(var, step, arguments, _at(key))
        max_parallel: int | None = None
        if "max_parallel" in entries:
            max_parallel = self.integer(entries["max_parallel"][1], "max_parallel", 1)
        if len(self.issues) > before or step is None or var is None or items is None:
            return None
        assert run_node is not None
        line, column = _at(node)
        action = Fanout(
            line=line,
            column=column,
            var=var,
            items=items,
            run=step,
            with_=arguments,
            max_parallel=max_parallel,
        )
        self.layout.step_refs[id(action)] = _at(run_node)
        return action

    def variable_used(
        self, var: str, step: str, arguments: Mapping[str, Argument], at: Pos
    ) -> None:
        """Each item should reach its step; a variable nothing reads runs one step N times."""
        schemas = self.functions[step]
        properties = schemas.input_schema.get("properties")
        if not isinstance(properties, Mapping):
            return  # what the step takes is not known: nothing to say
        if schemas.fanout_var_binds and var in properties and var not in arguments:
            return
        for argument in arguments.values():
            if isinstance(argument, Expression) and _reads(argument.text, var):
                return
        self.error(
            at,
            f"the fan-out variable `{var}` reaches no input of {step} ({step} has no input "
            f"`{var}` and no `with:` value uses it): every item would run the same",
        )

    def arguments(
        self,
        entry: tuple[ScalarNode, Node] | None,
        step: str,
        variables: Mapping[str, SchemaRef | None],
    ) -> dict[str, Argument]:
        if entry is None:
            return {}
        entries = self.mapping(entry[1], "`with:`")
        if entries is None:
            return {}
        properties = self.functions[step].input_schema.get("properties")
        out: dict[str, Argument] = {}
        for name, (key, value) in entries.items():
            if isinstance(properties, Mapping) and name not in properties:
                listed = ", ".join(sorted(str(p) for p in properties)) or "none"
                self.error(
                    _at(key),
                    f"{step} takes no input `{name}`{did_you_mean(name, properties)} "
                    f"(its inputs: {listed})",
                )
                continue
            if isinstance(value, ScalarNode) and value.tag == _STR:
                expression, _ = self.expression(value, f"`with: {name}`", variables)
                if expression is not None:
                    out[name] = expression
                continue
            ok, constant = self.constant(value)
            if ok:
                line, column = _at(value)
                out[name] = Constant(line=line, column=column, value=constant)
        return out

    def constant(self, node: Node) -> tuple[bool, Any]:
        """A ``with:`` value that is not a string, as JSON data (it travels in the input)."""
        if isinstance(node, SequenceNode):
            items = [self.constant(item) for item in node.value]
            return all(ok for ok, _ in items), [v for _, v in items]
        if isinstance(node, MappingNode):
            entries = self.mapping(node, "a `with:` value")
            if entries is None:
                return False, None
            values = {name: self.constant(value) for name, (_, value) in entries.items()}
            return all(ok for ok, _ in values.values()), {k: v for k, (_, v) in values.items()}
        assert isinstance(node, ScalarNode)
        if node.tag in (_INT, _FLOAT, _BOOL, _NULL):
            value = self.constructor.construct_object(node)
            if isinstance(value, float) and not math.isfinite(value):
                self.error(_at(node), f"`{node.value}` is not a number JSON can carry")
                return False, None
            return True, value
        return True, str(node.value)

    def expression(
        self,
        node: Node,
        what: str,
        variables: Mapping[str, SchemaRef | None],
        *,
        offset: int = 0,
        text: str | None = None,
    ) -> tuple[Expression | None, SchemaRef | None]:
        if text is None:
            text = self.string(node, what)
            if text is None:
                return None, None
        problems, schema = check_expression(
            text, self.functions, variables=variables, inputs=self.inputs
        )
        for at, message in problems:
            self.error(_at_offset(node, offset + at), message)
        if problems:
            return None, None
        line, column = _at_offset(node, offset)
        return Expression(line=line, column=column, text=text), schema

    # --- retry

    def retry(
        self, entry: tuple[ScalarNode, Node], beside: tuple[ScalarNode, Node] | None
    ) -> Retry | None:
        key, node = entry
        before = len(self.issues)
        entries = {} if _is_null(node) else self.mapping(node, "`retry:`")
        if entries is None:
            return None
        self.unknown_keys(entries, RETRY_KEYS, "`retry:`")
        settings: dict[str, Any] = {}
        if "max" in entries:
            settings["max"] = self.integer(
                entries["max"][1], "`retry: max` (attempts in all)", 1, 100
            )
        if "backoff" in entries:
            value = entries["backoff"][1]
            backoff = self.string(value, "`backoff:`")
            if backoff is not None and backoff not in ("fixed", "exponential"):
                self.error(
                    _at(value),
                    f"backoff is `fixed` or `exponential`, not `{backoff}`"
                    f"{did_you_mean(backoff, ('fixed', 'exponential'))}",
                )
            settings["backoff"] = backoff
        if "initial_interval" in entries:
            settings["initial_interval_s"] = self.duration(entries["initial_interval"][1])
        inside = entries.get("onExhausted")
        if inside is not None and beside is not None:
            self.error(
                _at(beside[0]),
                f"`onExhausted:` is given both inside `retry:` (line {_at(inside[0])[0]}) and "
                "beside it: keep one",
            )
        source = inside or beside
        if source is not None:
            settings["on_exhausted"] = self.actions(source[1], "onExhausted")
        if len(self.issues) > before:
            return None
        line, column = _at(key)
        return Retry(line=line, column=column, **settings)

    def duration(self, node: Node) -> float | None:
        seconds: float | None = None
        if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
            seconds = float(self.constructor.construct_object(node))
        elif (
            isinstance(node, ScalarNode)
            and node.tag == _STR
            and (m := _DURATION.fullmatch(str(node.value).strip()))
        ):
            seconds = float(m["n"]) * _UNITS[m["unit"]]
        if seconds is None or not math.isfinite(seconds):
            self.error(
                _at(node),
                "initial_interval is a duration such as 2s, 500ms or 1m (or a number of seconds)",
            )
            return None
        if not 0 < seconds <= 3600:
            self.error(_at(node), f"initial_interval must be over 0 and at most 1h, not {seconds}s")
            return None
        return seconds


def _reads(text: str, name: str) -> bool:
    return name in roots(text)
