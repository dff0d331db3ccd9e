"""The checks a definition passes before it is registered, so a run never meets them.

``parse_definition`` checks each node where it stands (names, forms, expressions, values); the
checks here need the whole set of rules: which rules can fire, loops with no way out, and whether
every input a step requires has something to fill it. They work on a ``Definition`` alone (as
it travels in a workflow's input), with positions from the nodes, or finer ones the parser
knows (``Layout``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from app.plato.rules.expressions import (
    ROOTS,
    ExpressionError,
    Field,
    Index,
    Name,
    Path,
    parse_expression,
    paths,
)
from app.plato.rules.model import (
    Action,
    Compensate,
    Definition,
    Fanout,
    Parallel,
    Rule,
    Run,
    Sequence,
)

Schema = Mapping[str, Any]


@dataclass(frozen=True)
class FunctionSchemas:
    """What registration knows of a step: the JSON Schemas of its input and output models.

    ``consumes`` names, per input field, the step whose output fills it when ``with:`` does
    not (``package`` ← ``mux-final``): the runtime's binding, declared where the step is.
    """

    name: str
    input_schema: Mapping[str, Any] = dataclass_field(default_factory=dict)
    output_schema: Mapping[str, Any] = dataclass_field(default_factory=dict)
    consumes: Mapping[str, str] = dataclass_field(default_factory=dict)
    fanout_var_binds: bool = True
    """Whether a fan-out variable fills the input field of the same name."""


@dataclass(frozen=True, order=True)
class DefinitionIssue:
    """One reason a definition is refused, at a 1-based line and column of its YAML."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class DefinitionError(ValueError):
    """A definition refused at registration, with every issue found, in order of position."""

    def __init__(self, errors: Iterable[DefinitionIssue]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass
class Layout:
    """Positions finer than the nodes', known only while parsing."""

    rules_at: tuple[int, int] = (1, 1)
    step_refs: dict[int, tuple[int, int]] = dataclass_field(default_factory=dict)
    """``id(action)`` → where its step is named (a fan-out's ``run:``, for one)."""

    def step_ref(self, action: Run | Fanout | Compensate) -> tuple[int, int]:
        return self.step_refs.get(id(action), (action.line, action.column))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` did you mean `x`?`` where a choice is close enough, else nothing."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f": did you mean `{close[0]}`?" if close else ""


def event_text(rule: Rule) -> str:
    when = rule.when
    return {
        "started": "workflow.started",
        "any_failed": "any.failed",
        "all_completed": f"all {when.step}.completed",
        "completed": f"{when.step}.completed",
        "failed": f"{when.step}.failed",
    }[when.kind]


# --- walking the actions -----------------------------------------------------------------------


def iter_actions(actions: Iterable[Action]) -> Iterator[Action]:
    """Every action, those inside ``sequence:`` and ``parallel:`` included."""
    for action in actions:
        yield action
        if isinstance(action, Parallel | Sequence):
            yield from iter_actions(action.actions)


def rule_actions(rule: Rule) -> Iterator[Action]:
    yield from iter_actions(rule.do)
    if rule.retry is not None:
        yield from iter_actions(rule.retry.on_exhausted)


def steps_run(actions: Iterable[Action]) -> set[str]:
    """Steps the actions run (compensations excluded: they run as the run fails, firing
    nothing)."""
    out: set[str] = set()
    for action in iter_actions(actions):
        if isinstance(action, Run):
            out.add(action.step)
        elif isinstance(action, Fanout):
            out.add(action.run)
    return out


def _rule_runs(rule: Rule) -> set[str]:
    runs = steps_run(rule.do)
    if rule.retry is not None:
        runs |= steps_run(rule.retry.on_exhausted)
    return runs


def _rule_fans(rule: Rule) -> set[str]:
    return {a.run for a in rule_actions(rule) if isinstance(a, Fanout)}


# --- expressions against schemas ---------------------------------------------------------------


@dataclass(frozen=True)
class SchemaRef:
    """A node of a JSON Schema with the document its ``$ref`` s resolve in."""

    root: Schema
    node: Schema


def _resolve(ref: SchemaRef) -> SchemaRef:
    node = ref.node
    for _ in range(32):
        target = node.get("$ref")
        if not isinstance(target, str):
            break
        if not target.startswith("#"):
            return SchemaRef(ref.root, {})
        found: Any = ref.root
        for part in [p for p in target[1:].split("/") if p]:
            key = part.replace("~1", "/").replace("~0", "~")
            found = found.get(key) if isinstance(found, Mapping) else None
        node = found if isinstance(found, Mapping) else {}
    return SchemaRef(ref.root, node)


def _branches(ref: SchemaRef, depth: int = 0) -> list[SchemaRef]:
    """The alternatives a value may take (``anyOf``/``oneOf``/``allOf`` flattened)."""
    ref = _resolve(ref)
    out: list[SchemaRef] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in ref.node.get(key, ()) if depth < 8 else ():
            if isinstance(branch, Mapping):
                out.extend(_branches(SchemaRef(ref.root, branch), depth + 1))
    own = {k: v for k, v in ref.node.items() if k not in ("anyOf", "oneOf", "allOf")}
    if not out or any(k in own for k in ("type", "properties", "items")):
        out.append(SchemaRef(ref.root, own))
    return out


def _types(node: Schema) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {str(k) for k in kind}
    if "properties" in node or "additionalProperties" in node:
        return {"object"}
    if "items" in node or "prefixItems" in node:
        return {"array"}
    return set()


def _step_into(ref: SchemaRef, segment: str | int) -> tuple[SchemaRef | None, str | None]:
    """The schema below ``segment``, ``None`` where it cannot be known, or a problem."""
    branches = [b for b in _branches(ref) if _types(b.node) != {"null"}]
    if any(not _types(b.node) for b in branches) or not branches:
        return None, None  # an open schema: anything may be there
    if isinstance(segment, int):
        arrays = [b for b in branches if "array" in _types(b.node)]
        if not arrays:
            return None, "is not a list: it cannot be indexed by a number"
        items = arrays[0].node.get("items")
        return (SchemaRef(ref.root, items) if isinstance(items, Mapping) else None), None
    objects = [b for b in branches if "object" in _types(b.node)]
    if not objects:
        kinds = sorted(set().union(*(_types(b.node) for b in branches)))
        return None, f"is {' or '.join(kinds)}: it has no field `{segment}`"
    names: list[str] = []
    for branch in objects:
        props = branch.node.get("properties")
        if isinstance(props, Mapping):
            if segment in props and isinstance(props[segment], Mapping):
                return SchemaRef(ref.root, props[segment]), None
            names.extend(str(p) for p in props)
        extra = branch.node.get("additionalProperties")
        if extra is True or (not isinstance(props, Mapping) and extra is None):
            return None, None
        if isinstance(extra, Mapping):
            return SchemaRef(ref.root, extra), None
    return None, f"has no `{segment}`{did_you_mean(segment, names)}"


def item_schema_of(collection: SchemaRef | None) -> SchemaRef | None:
    """The schema of one item of a list whose schema is known: a fan-out variable's."""
    if collection is None:
        return None
    for branch in _branches(collection):
        if "array" in _types(branch.node):
            items = branch.node.get("items")
            return SchemaRef(collection.root, items) if isinstance(items, Mapping) else None
    return None


def _walk(
    ref: SchemaRef | None, path: Path, first: int, label: str
) -> tuple[SchemaRef | None, tuple[int, str] | None]:
    """Follow ``path.segments[first:]`` down ``ref``: the schema at the end, or a problem at
    the offset of the segment that is not there."""
    shown = label
    for segment, offset in zip(path.segments[first:], path.offsets[first:], strict=True):
        if ref is None:
            return None, None
        ref, problem = _step_into(ref, segment)
        if problem is not None:
            return None, (offset, f"`{shown}` {problem}")
        shown += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return (ref if path.complete else None), None


def check_expression(
    text: str,
    functions: Mapping[str, FunctionSchemas],
    *,
    variables: Mapping[str, SchemaRef | None] | None = None,
    inputs: Iterable[str] | None = None,
) -> tuple[list[tuple[int, str]], SchemaRef | None]:
    """Problems in ``text`` as (0-based offset, message), and the schema of its value when
    it is a plain path whose schema is known (what a fan-out's items are made of).

    The roots are ``input``, ``steps`` and the ``variables`` in scope; ``steps.<step>.output``
    paths are followed down that step's output schema, ``input.<name>`` is checked against
    ``inputs`` when the definition declares them.
    """
    variables = variables or {}
    declared = None if inputs is None else set(inputs)
    try:
        tree = parse_expression(text)
    except ExpressionError as e:
        return [(e.column - 1, e.message)], None
    problems: list[tuple[int, str]] = []
    found = paths(tree)
    value: SchemaRef | None = None
    for path in found:
        schema, problem = _check_path(path, functions, variables, declared)
        if problem is not None:
            problems.append(problem)
        if isinstance(tree, Name | Field | Index) and not problems:
            value = schema
    return problems, value


def _check_path(
    path: Path,
    functions: Mapping[str, FunctionSchemas],
    variables: Mapping[str, SchemaRef | None],
    inputs: set[str] | None,
) -> tuple[SchemaRef | None, tuple[int, str] | None]:
    names = [*ROOTS, *variables]
    if path.root == "input":
        if inputs is not None and path.segments:
            first = path.segments[0]
            if not isinstance(first, str) or first not in inputs:
                listed = ", ".join(sorted(inputs)) or "none"
                hint = did_you_mean(str(first), inputs) if isinstance(first, str) else ""
                return None, (
                    path.offsets[0],
                    f"`input.{first}` is not in the definition's inputs{hint} (inputs: {listed})",
                )
        return None, None
    if path.root == "steps":
        segments = path.segments
        if not segments or not isinstance(segments[0], str):
            return None, (path.start, "write `steps.<step>.output...`: which step's output?")
        step = segments[0]
        if step not in functions:
            return None, (
                path.offsets[0],
                f"unknown step `{step}`{did_you_mean(step, functions)}",
            )
        if len(segments) < 2 or segments[1] != "output":
            at = path.offsets[1] if len(segments) > 1 else path.offsets[0]
            return None, (at, f"`steps.{step}` has only `.output`: write `steps.{step}.output...`")
        schema = functions[step].output_schema
        return _walk(SchemaRef(schema, schema), path, 2, f"steps.{step}.output")
    if path.root in variables:
        return _walk(variables[path.root], path, 0, path.root)
    scope = (
        " or the fan-out variable " + ", ".join(f"`{v}`" for v in variables) if variables else ""
    )
    return None, (
        path.start,
        f"unknown name `{path.root}` (an expression starts from `input.`, "
        f"`steps.<step>.output.`{scope}){did_you_mean(path.root, names)}",
    )


# --- the checks across rules -------------------------------------------------------------------


def validate_definition(
    definition: Definition,
    functions: Mapping[str, FunctionSchemas],
    *,
    inputs: Iterable[str] | None = None,
    layout: Layout | None = None,
) -> list[DefinitionIssue]:
    """The checks that need every rule at once; ``[]`` when the definition can be registered.

    ``inputs`` are the run input's fields where the caller knows them; a definition's own
    ``inputs:`` take precedence.
    """
    layout = layout or Layout()
    available = definition.inputs if definition.inputs is not None else inputs
    issues: list[DefinitionIssue] = []
    rules = definition.rules
    reachable = _reachable(rules)
    run_anywhere: set[str] = set().union(*(_rule_runs(r) for r in rules)) if rules else set()
    fanned_anywhere: set[str] = set().union(*(_rule_fans(r) for r in rules)) if rules else set()
    compensations = {a.step for r in rules for a in rule_actions(r) if isinstance(a, Compensate)}
    run_reachable: set[str] = set()
    for i in reachable:
        run_reachable |= _rule_runs(rules[i])

    if not any(r.when.kind == "started" for r in rules):
        issues.append(
            DefinitionIssue(
                *layout.rules_at,
                "no rule has `when: workflow.started`, so nothing would ever run",
            )
        )
    else:
        issues.extend(_never_fire(rules, reachable, run_anywhere, fanned_anywhere, compensations))
    issues.extend(_loops(rules, reachable))
    issues.extend(_retries(rules))
    issues.extend(_missing_inputs(rules, functions, available, run_reachable, layout))
    return sorted(issues)


def _fires(rule: Rule, run: set[str], fanned: set[str]) -> bool:
    when = rule.when
    if when.kind == "started":
        return True
    if when.kind == "any_failed":
        return bool(run)
    if when.kind == "all_completed":
        return when.step in fanned
    return when.step in run


def _reachable(rules: list[Rule]) -> set[int]:
    """Rules that some run can fire, from ``workflow.started`` on (a fixed point)."""
    reachable: set[int] = set()
    run: set[str] = set()
    fanned: set[str] = set()
    changed = True
    while changed:
        changed = False
        for i, rule in enumerate(rules):
            if i not in reachable and _fires(rule, run, fanned):
                reachable.add(i)
                run |= _rule_runs(rule)
                fanned |= _rule_fans(rule)
                changed = True
    return reachable


def _never_fire(
    rules: list[Rule],
    reachable: set[int],
    run_anywhere: set[str],
    fanned_anywhere: set[str],
    compensations: set[str],
) -> Iterator[DefinitionIssue]:
    for i, rule in enumerate(rules):
        when = rule.when
        step = when.step or ""
        if when.kind == "all_completed" and step not in fanned_anywhere:
            plain = f"; it runs once, so write `{step}.completed`" if step in run_anywhere else ""
            yield DefinitionIssue(
                when.line,
                when.column,
                f"`all {step}.completed` waits for every fanned-out instance of {step}, but no "
                f"rule fans it out{plain} (or run it with `fanout:`)",
            )
            continue
        if i in reachable:
            continue
        if when.kind == "all_completed" or step in run_anywhere:
            origin = [
                f"line {r.line}" for r in rules if step in _rule_runs(r) or step in _rule_fans(r)
            ]
            reason = (
                f"{step} runs only from rules that can never fire themselves ({', '.join(origin)})"
            )
        elif when.kind == "any_failed":
            reason = "no rule runs any step"
        elif step in compensations:
            reason = (
                f"{step} runs only as a compensation, once the run has failed, and "
                "compensations fire no rules"
            )
        else:
            reason = f"no rule runs {step}"
        yield DefinitionIssue(
            when.line, when.column, f"`{event_text(rule)}` can never fire: {reason}"
        )


def _loops(rules: list[Rule], reachable: set[int]) -> Iterator[DefinitionIssue]:
    """Loops of ``completed`` rules without an ``if:``: once their steps succeed, nothing
    ends them (a failure is a way out; a rule with a condition is one too)."""
    edges: dict[str, list[tuple[str, Rule]]] = {}
    for i in sorted(reachable):
        rule = rules[i]
        if rule.if_ is not None or rule.when.kind not in ("completed", "all_completed"):
            continue
        for target in sorted(steps_run(rule.do)):
            edges.setdefault(rule.when.step or "", []).append((target, rule))
    for component in _cycles(edges):
        inside = sorted(
            {
                (rule.line, rule.column, event_text(rule), target)
                for step in component
                for target, rule in edges.get(step, [])
                if target in component
            }
        )
        first = inside[0]
        chain = "; ".join(
            f"`{event}` (line {line}) runs {target}" for line, _, event, target in inside
        )
        yield DefinitionIssue(
            first[0],
            first[1],
            f"these rules loop with no way out: {chain}. Once the steps succeed nothing ends "
            "the loop, and the run would fail at max_firings: add an `if:` to one of these "
            "rules, or end the loop",
        )


def _cycles(edges: Mapping[str, list[tuple[str, Rule]]]) -> list[set[str]]:
    """Strongly connected sets of steps that contain a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[set[str]] = []
    counter = 0
    nodes = sorted(set(edges) | {t for targets in edges.values() for t, _ in targets})
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [t for t, _ in edges.get(node, [])]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                looped = len(component) > 1 or any(t == node for t in targets)
                if looped:
                    out.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def _retries(rules: list[Rule]) -> Iterator[DefinitionIssue]:
    """One retry policy per step: two would leave the runtime to pick one silently."""
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.retry is None:
            continue
        key = rule.when.step if rule.when.kind == "failed" else "*"
        key = key or "*"
        if key in seen:
            first = seen[key]
            yield DefinitionIssue(
                rule.retry.line,
                rule.retry.column,
                f"a second retry for `{event_text(rule)}` (the first is at line {first.line}): "
                "give each step one retry policy",
            )
        else:
            seen[key] = rule


def _missing_inputs(
    rules: list[Rule],
    functions: Mapping[str, FunctionSchemas],
    inputs: Iterable[str] | None,
    run: set[str],
    layout: Layout,
) -> Iterator[DefinitionIssue]:
    """Each required input must be filled: by ``with:``, the fan-out variable of its name, the
    run input (by name), or the output of the step it ``consumes`` (run by some rule)."""
    declared = None if inputs is None else set(inputs)
    for rule in rules:
        for action in rule_actions(rule):
            if not isinstance(action, Run | Fanout | Compensate):
                continue
            step = action.run if isinstance(action, Fanout) else action.step
            schemas = functions.get(step)
            if schemas is None:
                continue
            required = schemas.input_schema.get("required", [])
            for name in required if isinstance(required, list) else []:
                if name in action.with_:
                    continue
                if isinstance(action, Fanout) and schemas.fanout_var_binds and name == action.var:
                    continue
                if declared is None or name in declared:
                    continue
                source = schemas.consumes.get(name)
                if source is not None and source in run:
                    continue
                if source is not None:
                    why = (
                        f"it takes it from {source}'s output, but no rule runs {source}: run "
                        f"{source}, or give `{name}` under `with:`"
                    )
                else:
                    listed = ", ".join(sorted(declared)) or "none"
                    why = (
                        f"nothing fills it: give it under `with:`, or add it to `inputs:` if the "
                        f"run input carries it (inputs: {listed})"
                    )
                yield DefinitionIssue(*layout.step_ref(action), f"{step} needs `{name}`; {why}")
