"""Plato's expression language: paths into a run's data, literals, comparisons, and/or/not.

A rule's ``for:``, ``with:`` and ``if:`` values are evaluated inside the workflow, so the
evaluator must be deterministic and unable to reach anything but the data it is handed. It is a
grammar of its own, parsed by recursive descent: there is no ``eval``, no ``getattr``, and a
``.name`` is a mapping lookup, never an attribute. Grammar (lowest precedence first)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := unary [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") unary]
    unary      := "-" unary | postfix
    postfix    := primary ("." NAME | "[" expr "]")*
    primary    := NUMBER | STRING | "true" | "false" | "null" | NAME
                | FUNCTION "(" [expr ("," expr)*] ")" | "(" expr ")" | "[" [expr ("," expr)*] "]"

After ``steps.`` a name may contain ``-`` (step names are kebab-case). The functions are
``len(x)`` and ``range(n)`` / ``range(a, b)``. Only this module and the data are involved, so
the same text and data give the same value on every replay.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 2_000
"""Characters in one expression: a rule's expression is a path or a short condition."""
MAX_DEPTH = 48
"""Nesting of brackets and operators: deeper is a mistake or an attack, never a pipeline."""
MAX_RANGE = 10_000
"""Items ``range()`` may make: a fan-out over more is not a pipeline either."""

KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
FUNCTIONS = frozenset({"len", "range"})
ROOTS = ("input", "steps")
"""The names every expression may start from; fan-out variables come on top, per scope."""


class ExpressionError(ValueError):
    """An expression that does not parse or cannot be evaluated on the data given.

    ``column`` is 1-based within the expression's text, so that the definition parser can
    point at the right character of the YAML.
    """

    def __init__(self, message: str, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}"


# --- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    start: int
    """0-based offset of the node's first character in the expression text."""
    end: int


@dataclass(frozen=True)
class Literal(Expr):
    value: Any


@dataclass(frozen=True)
class Name(Expr):
    name: str


@dataclass(frozen=True)
class Field(Expr):
    """``obj.name``: a mapping lookup."""

    obj: Expr
    name: str
    name_start: int


@dataclass(frozen=True)
class Index(Expr):
    """``obj[index]``: a list item or a mapping lookup."""

    obj: Expr
    index: Expr


@dataclass(frozen=True)
class Call(Expr):
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class ListOf(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not(Expr):
    operand: Expr


@dataclass(frozen=True)
class Negate(Expr):
    operand: Expr


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Path:
    """A chain of lookups from a root name, as far as it is static (see ``paths``)."""

    root: str
    segments: tuple[str | int, ...]
    offsets: tuple[int, ...]
    """0-based offset of each segment, for messages that point at it."""
    start: int
    complete: bool
    """False where a computed index cut the chain: what follows cannot be checked."""


# --- tokenizer ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "str", "name", "op", "end"
    value: Any
    start: int
    end: int


_NUMBER = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ".", ",", "-")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        after_steps = (
            len(tokens) >= 2
            and tokens[-1].value == "."
            and tokens[-2].kind == "name"
            and tokens[-2].value == "steps"
        )
        if after_steps and (m := _STEP_NAME.match(text, i)):
            tokens.append(_Token("name", m.group(), i, m.end()))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            literal = m.group()
            value: Any = float(literal) if m.group(1) or m.group(2) else int(literal)
            tokens.append(_Token("num", value, i, m.end()))
            i = m.end()
        elif m := _NAME.match(text, i):
            tokens.append(_Token("name", m.group(), i, m.end()))
            i = m.end()
        elif char in "'\"":
            i = _string(text, i, tokens)
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
            if op is None:
                hint = " (compare with ==)" if char == "=" else ""
                raise ExpressionError(f"unexpected character {char!r}{hint}", i + 1)
            tokens.append(_Token("op", op, i, i + len(op)))
            i += len(op)
    tokens.append(_Token("end", None, len(text), len(text)))
    return tokens


def _string(text: str, start: int, tokens: list[_Token]) -> int:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            tokens.append(_Token("str", "".join(out), start, i + 1))
            return i + 1
        if char == "\\":
            escaped = text[i + 1 : i + 2]
            if escaped not in _ESCAPES:
                raise ExpressionError(f"unknown escape \\{escaped} in a string", i + 1)
            out.append(_ESCAPES[escaped])
            i += 2
            continue
        out.append(char)
        i += 1
    raise ExpressionError(f"string not closed: add {quote}", start + 1)


# --- parser ------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.i]

    def at(self, *values: str) -> bool:
        return self.token.kind in ("op", "name") and self.token.value in values

    def take(self) -> _Token:
        token = self.token
        self.i += 1
        return token

    def expect(self, value: str, what: str) -> _Token:
        if not (self.token.kind == "op" and self.token.value == value):
            raise ExpressionError(
                f"expected {value!r} {what}, found {_describe(self.token)}", self.token.start + 1
            )
        return self.take()

    def parse(self) -> Expr:
        if self.token.kind == "end":
            raise ExpressionError("empty expression", 1)
        node = self.expr()
        if self.token.kind != "end":
            raise ExpressionError(f"unexpected {_describe(self.token)}", self.token.start + 1)
        return node

    def expr(self) -> Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError("expression nested too deeply", self.token.start + 1)
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Expr:
        left = self.and_()
        while self.at("or") and self.token.kind == "name":
            self.take()
            right = self.and_()
            left = BoolOp(left.start, right.end, "or", left, right)
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while self.at("and") and self.token.kind == "name":
            self.take()
            right = self.not_()
            left = BoolOp(left.start, right.end, "and", left, right)
        return left

    def not_(self) -> Expr:
        if self.token.kind == "name" and self.token.value == "not":
            start = self.take().start
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError("expression nested too deeply", start + 1)
            try:
                operand = self.not_()
            finally:
                self.depth -= 1
            return Not(start, operand.end, operand)
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.unary()
        op = self._comparison_op()
        if op is None:
            return left
        right = self.unary()
        if self._comparison_op(peek=True) is not None:
            raise ExpressionError(
                "comparisons do not chain: join them with `and`", self.token.start + 1
            )
        return Compare(left.start, right.end, op, left, right)

    def _comparison_op(self, *, peek: bool = False) -> str | None:
        token = self.token
        if token.kind == "op" and token.value in ("==", "!=", "<", "<=", ">", ">="):
            op = str(token.value)
        elif token.kind == "name" and token.value == "in":
            op = "in"
        elif (
            token.kind == "name"
            and token.value == "not"
            and self.tokens[self.i + 1].kind == "name"
            and self.tokens[self.i + 1].value == "in"
        ):
            if not peek:
                self.take()
            op = "not in"
        else:
            return None
        if not peek:
            self.take()
        return op

    def unary(self) -> Expr:
        if self.token.kind == "op" and self.token.value == "-":
            start = self.take().start
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionError("expression nested too deeply", start + 1)
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            return Negate(start, operand.end, operand)
        return self.postfix()

    def postfix(self) -> Expr:
        node = self.primary()
        while self.token.kind == "op" and self.token.value in (".", "["):
            if self.take().value == ".":
                name = self.token
                if name.kind != "name":
                    raise ExpressionError(
                        f"expected a name after '.', found {_describe(name)}", name.start + 1
                    )
                self.take()
                node = Field(node.start, name.end, node, str(name.value), name.start)
            else:
                index = self.expr()
                close = self.expect("]", "to close the index")
                node = Index(node.start, close.end, node, index)
        if self.token.kind == "op" and self.token.value == "(":
            raise ExpressionError("only len() and range() can be called", self.token.start + 1)
        return node

    def primary(self) -> Expr:
        token = self.token
        if token.kind in ("num", "str"):
            self.take()
            return Literal(token.start, token.end, token.value)
        if token.kind == "name":
            self.take()
            word = str(token.value)
            if word in ("true", "false", "null"):
                return Literal(token.start, token.end, {"true": True, "false": False}.get(word))
            if word in KEYWORDS:
                raise ExpressionError(f"unexpected `{word}`", token.start + 1)
            if self.token.kind == "op" and self.token.value == "(":
                if word not in FUNCTIONS:
                    raise ExpressionError(
                        f"unknown function `{word}`: the functions are len() and range()",
                        token.start + 1,
                    )
                self.take()
                args = self._items(")", "to close the call")
                return Call(token.start, self.tokens[self.i - 1].end, word, args)
            return Name(token.start, token.end, word)
        if token.kind == "op" and token.value == "(":
            self.take()
            node = self.expr()
            self.expect(")", "to close the parenthesis")
            return node
        if token.kind == "op" and token.value == "[":
            self.take()
            items = self._items("]", "to close the list")
            return ListOf(token.start, self.tokens[self.i - 1].end, items)
        raise ExpressionError(f"unexpected {_describe(token)}", token.start + 1)

    def _items(self, close: str, what: str) -> tuple[Expr, ...]:
        items: list[Expr] = []
        if self.token.kind == "op" and self.token.value == close:
            self.take()
            return ()
        while True:
            items.append(self.expr())
            if self.token.kind == "op" and self.token.value == ",":
                self.take()
                continue
            self.expect(close, what)
            return tuple(items)


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end"
    if token.kind == "str":
        return "a string"
    return f"`{token.value}`"


@functools.lru_cache(maxsize=1024)
def parse_expression(text: str) -> Expr:
    """Parse once per text: a rule fires many times with the same expressions."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters", 1)
    return _Parser(text).parse()


# --- static views ------------------------------------------------------------------------------


def paths(expr: str | Expr) -> list[Path]:
    """Every lookup chain in the expression, from its root, for the checks at registration."""
    node = parse_expression(expr) if isinstance(expr, str) else expr
    out: list[Path] = []
    _collect(node, out)
    return out


def roots(expr: str | Expr) -> set[str]:
    """The names an expression starts from (``input``, ``steps``, fan-out variables)."""
    return {path.root for path in paths(expr)}


def _collect(node: Expr, out: list[Path]) -> None:
    if isinstance(node, Name | Field | Index):
        chain: list[tuple[str | int, int]] = []
        complete = True
        cursor: Expr = node
        while isinstance(cursor, Field | Index):
            if isinstance(cursor, Field):
                chain.append((cursor.name, cursor.name_start))
            else:
                _collect(cursor.index, out)
                key = cursor.index
                static = isinstance(key, Literal) and isinstance(key.value, str | int)
                if static and isinstance(key, Literal) and not isinstance(key.value, bool):
                    chain.append((key.value, key.start))
                    cursor = cursor.obj
                    continue
                chain.clear()  # what follows a computed index cannot be known statically
                complete = False
            cursor = cursor.obj
        if isinstance(cursor, Name):
            chain.reverse()
            out.append(
                Path(
                    cursor.name,
                    tuple(s for s, _ in chain),
                    tuple(o for _, o in chain),
                    cursor.start,
                    complete,
                )
            )
        else:
            _collect(cursor, out)
    elif isinstance(node, Call):
        for arg in node.args:
            _collect(arg, out)
    elif isinstance(node, ListOf):
        for item in node.items:
            _collect(item, out)
    elif isinstance(node, Not | Negate):
        _collect(node.operand, out)
    elif isinstance(node, BoolOp | Compare):
        _collect(node.left, out)
        _collect(node.right, out)


# --- evaluation --------------------------------------------------------------------------------


def evaluate(expr: str | Expr, context: Mapping[str, Any]) -> Any:
    """The value of ``expr`` over ``context`` (``input``, ``steps``, fan-out variables).

    ``steps`` maps a step name to ``{"output": ...}``. Only mappings, lists and JSON scalars
    are looked into; anything else in the data is refused rather than inspected.
    """
    text = expr if isinstance(expr, str) else None
    node = parse_expression(expr) if isinstance(expr, str) else expr
    return _Evaluator(context, text).value(node)


def holds(expr: str | Expr, context: Mapping[str, Any]) -> bool:
    """Whether a rule's ``if:`` holds: the truth of its value (null, 0, "" and [] are false)."""
    return _truth(evaluate(expr, context))


class _Evaluator:
    def __init__(self, context: Mapping[str, Any], text: str | None) -> None:
        self.context = context
        self.text = text

    def source(self, node: Expr) -> str:
        return self.text[node.start : node.end] if self.text is not None else "the value"

    def fail(self, message: str, node: Expr) -> ExpressionError:
        return ExpressionError(message, node.start + 1)

    def value(self, node: Expr) -> Any:
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Name):
            if node.name not in self.context:
                raise self.fail(f"unknown name `{node.name}`", node)
            return self.context[node.name]
        if isinstance(node, Field):
            obj = self.value(node.obj)
            if not isinstance(obj, Mapping):
                raise ExpressionError(
                    f"`{self.source(node.obj)}` is {_kind(obj)}, it has no field `{node.name}`",
                    node.name_start + 1,
                )
            if node.name not in obj:
                raise ExpressionError(
                    f"`{self.source(node.obj)}` has no `{node.name}`", node.name_start + 1
                )
            return obj[node.name]
        if isinstance(node, Index):
            return self.index(node)
        if isinstance(node, Call):
            return self.call(node)
        if isinstance(node, ListOf):
            return [self.value(item) for item in node.items]
        if isinstance(node, Not):
            return not _truth(self.value(node.operand))
        if isinstance(node, Negate):
            number = self.value(node.operand)
            if not _is_number(number):
                raise self.fail(f"cannot negate {_kind(number)}", node)
            return -number
        if isinstance(node, BoolOp):
            left = _truth(self.value(node.left))
            if node.op == "and":
                return left and _truth(self.value(node.right))
            return left or _truth(self.value(node.right))
        if isinstance(node, Compare):
            return self.compare(node)
        raise self.fail("unsupported expression", node)  # pragma: no cover

    def index(self, node: Index) -> Any:
        obj = self.value(node.obj)
        key = self.value(node.index)
        if isinstance(obj, list | tuple):
            if not isinstance(key, int) or isinstance(key, bool):
                raise self.fail(
                    f"a list is indexed by a whole number, not {_kind(key)}", node.index
                )
            if not -len(obj) <= key < len(obj):
                raise self.fail(
                    f"index {key} is out of range: `{self.source(node.obj)}` has {len(obj)} items",
                    node.index,
                )
            return obj[key]
        if isinstance(obj, Mapping):
            if not isinstance(key, str):
                raise self.fail(f"a mapping is indexed by a string, not {_kind(key)}", node.index)
            if key not in obj:
                raise self.fail(f"`{self.source(node.obj)}` has no {key!r}", node.index)
            return obj[key]
        raise self.fail(f"`{self.source(node.obj)}` is {_kind(obj)}: it cannot be indexed", node)

    def call(self, node: Call) -> Any:
        args = [self.value(arg) for arg in node.args]
        if node.function == "len":
            if len(args) != 1:
                raise self.fail("len() takes one value", node)
            if not isinstance(args[0], list | tuple | str | Mapping):
                raise self.fail(f"len() of {_kind(args[0])}", node)
            return len(args[0])
        if not 1 <= len(args) <= 2 or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in args
        ):
            raise self.fail("range() takes one or two whole numbers", node)
        low, high = (0, args[0]) if len(args) == 1 else (args[0], args[1])
        if high - low > MAX_RANGE:
            raise self.fail(f"range() of more than {MAX_RANGE} numbers", node)
        return list(range(low, high))

    def compare(self, node: Compare) -> bool:
        left = self.value(node.left)
        right = self.value(node.right)
        if node.op == "==":
            return _equal(left, right)
        if node.op == "!=":
            return not _equal(left, right)
        if node.op in ("in", "not in"):
            if isinstance(right, list | tuple):
                found = any(_equal(left, item) for item in right)
            elif isinstance(right, Mapping | str):
                if not isinstance(left, str):
                    raise self.fail(f"`in` a {_kind(right)} needs a string on the left", node)
                found = left in right
            else:
                raise self.fail(f"`in` needs a list, mapping or string, not {_kind(right)}", node)
            return found if node.op == "in" else not found
        if not (
            (_is_number(left) and _is_number(right))
            or (isinstance(left, str) and isinstance(right, str))
        ):
            raise self.fail(f"cannot order {_kind(left)} against {_kind(right)}", node)
        if node.op == "<":
            return bool(left < right)
        if node.op == "<=":
            return bool(left <= right)
        if node.op == ">":
            return bool(left > right)
        return bool(left >= right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, as in the data the steps exchange."""
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def _truth(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str | list | tuple | Mapping):
        return bool(value)
    raise ExpressionError(f"{_kind(value)} is neither true nor false")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return "an unsupported value"
