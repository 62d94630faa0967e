"""Job requirements: a small expression language over `host.*` and `job.*`, never eval'ed.

Theory of operation
-------------------
A job may require things of the host that runs it (`farmd submit --requires EXPR`):

    host.os == linux and host.memory >= 32G and (host.gpu or job.priority < 10)

`parse_requirement` reads the text once, at submit, into a `Requirement`: a tree of
clauses, each compiled to a closure `(host, job) -> bool`. Dispatch calls `matches` at
every scheduling pick, so the work is done up front: a name becomes a namespace and a
key, a literal (`8G`, `[a, b]`) its value, a comparison of two literals a constant, and
an `and`/`or` chain one flat loop (a thousand clauses are not a thousand nested calls).
No text is ever evaluated as Python.

Grammar, loosest first (`not` takes the whole comparison after it, as in Python: the
sides of a comparison are values, never tests):

    requirement := or_test END
    or_test     := and_test (('or' | '||') and_test)*
    and_test    := not_test (('and' | '&&') not_test)*
    not_test    := ('not' | '!') not_test | '(' or_test ')' | value [OPERATOR value]
    OPERATOR    := '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'has'
    value       := NUMBER | STRING | WORD | host.KEY | job.KEY | '[' [literal (',' literal)*] ']'

A NUMBER is `-?digits[.digits]` with an optional unit K, M, G or T (any case, powers of
1024), an int when whole. A STRING is quoted with `'` or `"`, without escapes. A WORD
(`linux`, `x86_64`) is a string; one shaped like `name.key` (`hosts.os`) is refused as an
unknown namespace, because read as a string it would silently test something else.

Evaluation never raises. The facts it reads (a worker's properties, a job's fields) come
from config files, command lines and peers, so any value may meet any other:

- a missing property is None; None equals only None and orders with nothing;
- numbers compare with numbers; a string that reads as a number (`"16"`, `"8G"`)
  compares as that number against a number;
- strings compare with strings, case-sensitively (ordering is by code point);
- a bool equals a bool, or one of the words true/false/yes/no/1/0 (any case);
- lists equal lists item by item; `in` and `has` look into a list or a comma-separated
  string (items stripped, empty ones dropped), with the same equality;
- every other pairing is unequal, and ordering it is false. Values of other types
  (dicts, bytes...) equal nothing and are false as a test.

A bare value as a test is its truthiness: None, False, 0, an empty list and the strings
"", "false", "no" and "0" (any case, spaces ignored) are false.

Errors are one line naming the text and the 1-based column of the fault, as restrictions
in `farmd.cluster` are. The text is read token by token as the parser asks, so the fault
reported is the leftmost one. Length (4096 characters) and nesting (64 levels of `(` and
`not`) are capped so that a hostile text costs bounded time and stack.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, Final, NamedTuple

import attrs

from farmd.errors import RequirementError

Facts = Mapping[str, object]
Check = Callable[[Facts, Facts], bool]

MAX_LENGTH: Final = 4096
MAX_DEPTH: Final = 64


# --------------------------------------------------------------------------- the result


@attrs.frozen
class _Clause:
    """One test of the tree: its source text and its compiled check. `conjuncts` are
    the parts of an `and`, which `first_false` looks into; every other clause is whole."""

    source: str
    check: Check
    conjuncts: tuple[_Clause, ...] = ()


@attrs.frozen
class Requirement:
    """A parsed requirement; equal (and hashed) by its source text. Build it with
    `parse_requirement`; `str()` gives the text back."""

    source: str
    _root: _Clause = attrs.field(eq=False, repr=False, alias="_root")

    def matches(self, host: Facts, job: Facts) -> bool:
        return self._root.check(host, job)

    def first_false(self, host: Facts, job: Facts) -> str | None:
        """None if it matches; else the source text of the smallest clause that makes it
        false: for `a and b` the first false conjunct (recursively), for `not x`,
        `a or b` and comparisons the clause itself."""
        clause = self._root
        if clause.check(host, job):
            return None
        while clause.conjuncts:
            clause = next(part for part in clause.conjuncts if not part.check(host, job))
        return clause.source

    def __str__(self) -> str:
        return self.source


def _always(host: Facts, job: Facts) -> bool:
    return True


def _never(host: Facts, job: Facts) -> bool:
    return False


NO_REQUIREMENT: Final = Requirement("", _Clause("", _always))


def parse_requirement(text: object) -> Requirement:
    """Parse a requirement; "" or blanks give NO_REQUIREMENT. Bad text is refused with a
    one-line RequirementError naming the column of the fault."""
    if not isinstance(text, str):
        msg = f"bad requirement {_describe(text)}: must be a string such as 'host.os == linux'"
        raise RequirementError(msg)
    body = text.rstrip()
    source = body.lstrip()
    if len(source) > MAX_LENGTH:
        shown = f"{source[:40]!r}... ({len(source)} characters)"
        at = len(body) - len(source) + MAX_LENGTH + 1
        msg = f"bad requirement {shown}: column {at}: longer than {MAX_LENGTH} characters"
        raise RequirementError(msg)
    if not source:
        return NO_REQUIREMENT
    return _parse_requirement(text)


@functools.lru_cache(maxsize=4096)
def _parse_requirement(text: str) -> Requirement:
    # Cached: the store reloads the same few texts for every job of a kind, and the
    # result is immutable.
    root = _Parser(text).parse()
    return Requirement(text.strip(), root)


def _describe(value: object) -> str:
    """A short one-line repr of a value that is not a string (its repr may raise)."""
    try:
        shown = repr(value)
    except Exception:
        shown = f"<{type(value).__name__}>"
    if not shown.isprintable():
        shown = repr(shown)[1:-1]  # escape line breaks: the message stays one line
    return shown if len(shown) <= 60 else shown[:57] + "..."


# --------------------------------------------------------------------------- values


# Kinds of values, as the comparisons see them; anything else is _OTHER.
_NONE, _BOOL, _NUMBER, _STRING, _LIST, _OTHER = range(6)
_KIND_OF_TYPE: dict[type, int] = {
    type(None): _NONE,
    bool: _BOOL,
    int: _NUMBER,
    float: _NUMBER,
    str: _STRING,
    list: _LIST,
    tuple: _LIST,
}


def _kind(value: object) -> int:
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is not None:
        return kind
    # subclasses (an IntEnum, a str subclass) read as their base type
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int | float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, list | tuple):
        return _LIST
    return _OTHER


_UNITS: Final = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_NUMBER_TEXT = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)([A-Za-z]*)")
_FALSE_WORDS: Final = frozenset({"", "false", "no", "0"})
_BOOL_WORDS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _number(digits: str, unit: str) -> int | float:
    """The value of a number literal whose unit is known; an int when whole. May raise
    OverflowError (a fraction too large for a float)."""
    scale = _UNITS[unit.lower()]
    if "." not in digits:
        return int(digits) * scale
    exact = Fraction(digits) * scale  # exact: 2.5G is a whole number of bytes
    return int(exact) if exact.denominator == 1 else float(exact)


@functools.lru_cache(maxsize=4096)
def _number_in_text(text: str) -> int | float | None:
    """The number a string property reads as (`"16"`, `" 8G "`), or None."""
    match = _NUMBER_TEXT.fullmatch(text.strip())
    if match is None or match.group(2).lower() not in _UNITS:
        return None
    try:
        return _number(match.group(1), match.group(2))
    except (ValueError, OverflowError):  # beyond int's digit limit, or a float's range
        return None


def _truthy(value: object) -> bool:
    kind = _kind(value)
    if kind == _STRING:
        return str(value).strip().lower() not in _FALSE_WORDS
    if kind in (_BOOL, _NUMBER, _LIST):
        return bool(value)
    return False  # None and values of unknown types


def _equal(a: object, b: object) -> bool:
    if type(a) is str and type(b) is str:  # the common case first
        return a == b
    ka, kb = _kind(a), _kind(b)
    if ka == kb:
        if ka == _LIST:
            left, right = _as_list(a), _as_list(b)
            return len(left) == len(right) and all(map(_equal, left, right))
        return ka != _OTHER and a == b
    if ka == _STRING:
        a, b, ka, kb = b, a, kb, ka  # now only b may be the string
    if kb != _STRING:
        return False
    if ka == _NUMBER:
        number = _number_in_text(str(b))
        return number is not None and a == number
    if ka == _BOOL:
        return _BOOL_WORDS.get(str(b).strip().lower()) is bool(a)
    return False


def _as_list(value: object) -> list[object] | tuple[object, ...]:
    return value if isinstance(value, list | tuple) else ()


def _ordered(a: object, b: object) -> tuple[Any, Any] | None:
    """The pair to order, with a numeric string read as a number against a number, or
    None when the two do not order (different types, None, bools, lists)."""
    ka, kb = _kind(a), _kind(b)
    if ka == kb:
        return (a, b) if ka in (_NUMBER, _STRING) else None
    if ka == _NUMBER and kb == _STRING:
        number = _number_in_text(str(b))
        return None if number is None else (a, number)
    if ka == _STRING and kb == _NUMBER:
        number = _number_in_text(str(a))
        return None if number is None else (number, b)
    return None


def _less(a: object, b: object) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] < pair[1]


def _at_most(a: object, b: object) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] <= pair[1]


def _greater(a: object, b: object) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] > pair[1]


def _at_least(a: object, b: object) -> bool:
    pair = _ordered(a, b)
    return pair is not None and pair[0] >= pair[1]


def _not_equal(a: object, b: object) -> bool:
    return not _equal(a, b)


@functools.lru_cache(maxsize=4096)
def _items(text: str) -> tuple[str, ...]:
    """The items of a comma-separated string: stripped, empty ones dropped."""
    return tuple(item for item in (part.strip() for part in text.split(",")) if item)


def _member(item: object, group: object) -> bool:
    """`item in group`: group is a list, or a comma-separated string."""
    kind = _kind(group)
    if kind == _LIST:
        return any(_equal(item, x) for x in _as_list(group))
    if kind == _STRING:
        return any(_equal(item, x) for x in _items(str(group)))
    return False


def _has(group: object, item: object) -> bool:
    return _member(item, group)


_OPERATORS: Final[dict[str, Callable[[object, object], bool]]] = {
    "==": _equal,
    "!=": _not_equal,
    "<": _less,
    "<=": _at_most,
    ">": _greater,
    ">=": _at_least,
    "in": _member,
    "has": _has,
}


# --------------------------------------------------------------------------- compiling


@attrs.frozen
class _Operand:
    """One side of a comparison: a literal's value, or a property (namespace, key)."""

    start: int
    end: int
    value: object = None
    namespace: str | None = None  # "host" or "job" for a property; None for a literal
    key: str = ""


def _compile_comparison(operator: str, left: _Operand, right: _Operand) -> Check:
    test = _OPERATORS[operator]
    lkey, rkey, lvalue, rvalue = left.key, right.key, left.value, right.value
    # One closure per shape, so a pick makes one call per comparison plus the test.
    match left.namespace, right.namespace:
        case None, None:
            return _always if test(lvalue, rvalue) else _never
        case "host", None:
            if operator == "in" and isinstance(rvalue, tuple):
                return _compile_in_list("host", lkey, rvalue)
            return lambda host, job: test(host.get(lkey), rvalue)
        case "job", None:
            if operator == "in" and isinstance(rvalue, tuple):
                return _compile_in_list("job", lkey, rvalue)
            return lambda host, job: test(job.get(lkey), rvalue)
        case None, "host":
            return lambda host, job: test(lvalue, host.get(rkey))
        case None, "job":
            return lambda host, job: test(lvalue, job.get(rkey))
        case "host", "host":
            return lambda host, job: test(host.get(lkey), host.get(rkey))
        case "host", "job":
            return lambda host, job: test(host.get(lkey), job.get(rkey))
        case "job", "host":
            return lambda host, job: test(job.get(lkey), host.get(rkey))
        case _:
            return lambda host, job: test(job.get(lkey), job.get(rkey))


def _compile_in_list(namespace: str, key: str, items: tuple[object, ...]) -> Check:
    """`host.gpu in [a6000, a100]`: a set lookup when the property is a string and the
    list holds only strings (string equality is plain `==` then)."""
    if not all(type(item) is str for item in items):
        if namespace == "host":
            return lambda host, job: _member(host.get(key), items)
        return lambda host, job: _member(job.get(key), items)
    strings = frozenset(items)

    def check(value: object) -> bool:
        return value in strings if type(value) is str else _member(value, items)

    if namespace == "host":
        return lambda host, job: check(host.get(key))
    return lambda host, job: check(job.get(key))


def _compile_truthiness(operand: _Operand) -> Check:
    key = operand.key
    if operand.namespace is None:
        return _always if _truthy(operand.value) else _never
    if operand.namespace == "host":
        return lambda host, job: _truthy(host.get(key))
    return lambda host, job: _truthy(job.get(key))


def _compile_not(inner: Check) -> Check:
    return lambda host, job: not inner(host, job)


def _compile_all(checks: tuple[Check, ...]) -> Check:
    if len(checks) == 2:
        first, second = checks
        return lambda host, job: first(host, job) and second(host, job)
    if len(checks) == 3:
        first, second, third = checks
        return lambda host, job: first(host, job) and second(host, job) and third(host, job)

    def check(host: Facts, job: Facts) -> bool:
        return all(part(host, job) for part in checks)

    return check


def _compile_any(checks: tuple[Check, ...]) -> Check:
    if len(checks) == 2:
        first, second = checks
        return lambda host, job: first(host, job) or second(host, job)

    def check(host: Facts, job: Facts) -> bool:
        return any(part(host, job) for part in checks)

    return check


# --------------------------------------------------------------------------- parsing


class _Token(NamedTuple):
    kind: str  # value, name, and, or, not, op, (, ), [, ], ",", end
    start: int
    end: int
    value: object = None  # a literal's value, an operator, or (namespace, key)


class _Parsed(NamedTuple):
    """A clause with the span it covers in the text (its parentheses included)."""

    clause: _Clause
    start: int
    end: int


_SPACE = re.compile(r"\s*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NUMBER_WORD = re.compile(r"-?[0-9][A-Za-z0-9_.-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_OTHER_NAMESPACE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z_]")
_DIGITS = frozenset("0123456789")
_KEYWORDS: Final = {
    "and": ("and", None),
    "or": ("or", None),
    "not": ("not", None),
    "in": ("op", "in"),
    "has": ("op", "has"),
}
_SYMBOLS: Final = {
    "==": ("op", "=="),
    "!=": ("op", "!="),
    "<=": ("op", "<="),
    ">=": ("op", ">="),
    "&&": ("and", None),
    "||": ("or", None),
    "<": ("op", "<"),
    ">": ("op", ">"),
    "!": ("not", None),
    "(": ("(", None),
    ")": (")", None),
    "[": ("[", None),
    "]": ("]", None),
    ",": (",", None),
}
_MISTAKES: Final = {
    "=>": "'=>' is not an operator: use '>='",
    "=<": "'=<' is not an operator: use '<='",
    "=": "'=' is not an operator: use '=='",
    "&": "'&' is not an operator: use '&&' or 'and'",
    "|": "'|' is not an operator: use '||' or 'or'",
}
_VALUE_KINDS: Final = frozenset({"value", "name", "[", "("})


class _Parser:
    """Recursive descent over tokens read one at a time; `depth` counts the `(` and
    `not` around the clause being read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.body = text.rstrip()  # so that "the end" is just after the last character
        self.previous: _Token | None = None
        self.token = self._lex(0)

    def parse(self) -> _Clause:
        parsed = self._or_test(0)
        if self.token.kind != "end":
            why = f"expected 'and', 'or' or the end, got {self._found(self.token)}"
            raise self._error(self.token.start, why + _keyword_case_hint(self._shown()))
        return parsed.clause

    # ------------------------------------------------------------------ grammar

    def _or_test(self, depth: int) -> _Parsed:
        parts = [self._and_test(depth)]
        while self.token.kind == "or":
            self._advance()
            parts.append(self._and_test(depth))
        if len(parts) == 1:
            return parts[0]
        start, end = parts[0].start, parts[-1].end
        check = _compile_any(tuple(part.clause.check for part in parts))
        return _Parsed(_Clause(self.body[start:end], check), start, end)

    def _and_test(self, depth: int) -> _Parsed:
        parts = [self._not_test(depth)]
        while self.token.kind == "and":
            self._advance()
            parts.append(self._not_test(depth))
        if len(parts) == 1:
            return parts[0]
        start, end = parts[0].start, parts[-1].end
        conjuncts = tuple(part.clause for part in parts)
        check = _compile_all(tuple(clause.check for clause in conjuncts))
        return _Parsed(_Clause(self.body[start:end], check, conjuncts), start, end)

    def _not_test(self, depth: int) -> _Parsed:
        opening = self.token
        if opening.kind == "not":
            self._enter(depth, opening)
            self._advance()
            inner = self._not_test(depth + 1)
            source = self.body[opening.start : inner.end]
            return _Parsed(
                _Clause(source, _compile_not(inner.clause.check)), opening.start, inner.end
            )
        if opening.kind == "(":
            self._enter(depth, opening)
            self._advance()
            if self.token.kind == ")":
                raise self._error(opening.start, "empty parentheses")
            inner = self._or_test(depth + 1)
            if self.token.kind != ")":
                why = (
                    f"expected 'and', 'or' or ')' to close the '(' at column "
                    f"{opening.start + 1}, got {self._found(self.token)}"
                )
                raise self._error(self.token.start, why + _keyword_case_hint(self._shown()))
            end = self.token.end
            self._advance()
            # the clause keeps the inner text: first_false names the smallest clause
            return _Parsed(inner.clause, opening.start, end)
        return self._comparison()

    def _comparison(self) -> _Parsed:
        left = self._value("a test")
        operator = self.token
        if operator.kind != "op":
            if operator.kind in _VALUE_KINDS or operator.kind == "not":
                why = (
                    "expected an operator (==, !=, <, <=, >, >=, in, has), 'and', 'or' or "
                    f"the end, got {self._found(operator)}"
                )
                if operator.kind == "not":
                    why += ": 'not' goes before a test (not A in B)"
                why += _keyword_case_hint(self._shown(operator))
                raise self._error(operator.start, why)
            check = _compile_truthiness(left)
            return _Parsed(_Clause(self.body[left.start : left.end], check), left.start, left.end)
        self._advance()
        right = self._value("a value")
        if self.token.kind == "op":
            why = f"comparisons do not chain, got {self._found(self.token)}: join them with 'and'"
            raise self._error(self.token.start, why)
        assert isinstance(operator.value, str)
        check = _compile_comparison(operator.value, left, right)
        source = self.body[left.start : right.end]
        return _Parsed(_Clause(source, check), left.start, right.end)

    def _value(self, wanted: str) -> _Operand:
        token = self.token
        if token.kind == "value":
            self._advance()
            return _Operand(token.start, token.end, value=token.value)
        if token.kind == "name":
            self._advance()
            assert isinstance(token.value, tuple)  # (namespace, key) for every name
            namespace, key = token.value
            return _Operand(token.start, token.end, namespace=namespace, key=key)
        if token.kind == "[":
            return self._list()
        after = f" after {self._shown(self.previous)!r}" if self.previous is not None else ""
        raise self._error(token.start, f"expected {wanted}{after}, got {self._found(token)}")

    def _list(self) -> _Operand:
        opening = self.token
        self._advance()
        items: list[object] = []
        while self.token.kind != "]":
            if self.token.kind != "value":
                why = f"expected a number or a string in the list, got {self._found(self.token)}"
                raise self._error(self.token.start, why)
            items.append(self.token.value)
            self._advance()
            if self.token.kind == ",":
                self._advance()
                if self.token.kind == "]":
                    raise self._error(self.token.start, "expected a list item after ','")
            elif self.token.kind != "]":
                why = (
                    f"expected ',' or ']' to close the '[' at column {opening.start + 1}, "
                    f"got {self._found(self.token)}"
                )
                raise self._error(self.token.start, why)
        end = self.token.end
        self._advance()
        return _Operand(opening.start, end, value=tuple(items))

    # ------------------------------------------------------------------ helpers

    def _enter(self, depth: int, token: _Token) -> None:
        if depth >= MAX_DEPTH:
            why = f"nested deeper than {MAX_DEPTH} levels of '(' and 'not'"
            raise self._error(token.start, why)

    def _advance(self) -> None:
        self.previous = self.token
        self.token = self._lex(self.token.end)

    def _shown(self, token: _Token | None = None) -> str:
        token = self.token if token is None else token
        shown = self.body[token.start : token.end]
        return shown if len(shown) <= 30 else shown[:27] + "..."

    def _found(self, token: _Token) -> str:
        return "the end" if token.kind == "end" else repr(self._shown(token))

    def _error(self, at: int, why: str) -> RequirementError:
        return RequirementError(f"bad requirement {self.text!r}: column {at + 1}: {why}")

    # ------------------------------------------------------------------ tokens

    def _lex(self, pos: int) -> _Token:
        text = self.body
        space = _SPACE.match(text, pos)
        pos = space.end() if space is not None else pos
        if pos >= len(text):
            return _Token("end", len(text), len(text))
        char = text[pos]
        if char in "'\"":
            close = text.find(char, pos + 1)
            if close < 0:
                raise self._error(pos, f"unterminated string: no closing {char}")
            return _Token("value", pos, close + 1, text[pos + 1 : close])
        if char in _DIGITS or (char == "-" and text[pos + 1 : pos + 2] in _DIGITS):
            return self._lex_number(pos)
        word = _WORD.match(text, pos)
        if word is not None:
            return self._lex_word(word.group(), pos)
        for size in (2, 1):
            symbol = text[pos : pos + size]
            if symbol in _SYMBOLS:
                kind, value = _SYMBOLS[symbol]
                return _Token(kind, pos, pos + size, value)
            if symbol in _MISTAKES:
                raise self._error(pos, _MISTAKES[symbol])
        raise self._error(pos, f"unexpected character {char!r}")

    def _lex_number(self, pos: int) -> _Token:
        word_match = _NUMBER_WORD.match(self.body, pos)
        assert word_match is not None  # _lex saw a digit (after an optional '-')
        word = word_match.group()
        number = _NUMBER_TEXT.fullmatch(word)
        if number is None:
            raise self._error(pos, f"bad number {word!r}")
        digits, unit = number.groups()
        if unit.lower() not in _UNITS:
            why = (
                f"unknown unit {unit!r} in {word!r}: units are K, M, G and T (powers of "
                "1024); quote a string that starts with a digit"
            )
            raise self._error(pos + len(digits), why)
        try:
            value = _number(digits, unit)
        except (ValueError, OverflowError):
            raise self._error(pos, f"number {word!r} is too large") from None
        return _Token("value", pos, word_match.end(), value)

    def _lex_word(self, word: str, pos: int) -> _Token:
        end = pos + len(word)
        if word in _KEYWORDS:
            kind, value = _KEYWORDS[word]
            return _Token(kind, pos, end, value)
        namespace, dot, key = word.partition(".")
        if dot and namespace in ("host", "job"):
            if not _KEY.fullmatch(key):
                why = f"expected a property name after '{namespace}.', such as {namespace}.os"
                raise self._error(pos + len(namespace) + 1, why)
            return _Token("name", pos, end, (namespace, key))
        if word in ("host", "job"):
            why = f"{word!r} alone names no property: write {word}.KEY, such as {word}.os"
            raise self._error(pos, why)
        other = _OTHER_NAMESPACE.match(word)
        if other is not None:
            why = (
                f"unknown namespace {other.group(1)!r} in {word!r}: properties are host.KEY "
                "or job.KEY; quote a string that holds a dot"
            )
            raise self._error(pos, why)
        return _Token("value", pos, end, word)


def _keyword_case_hint(shown: str) -> str:
    return " (keywords are lower case)" if shown in ("AND", "OR", "And", "Or") else ""
