"""Job requirements: parsing, evaluation, `first_false`, refusals with their column, and
random expressions held to an independent oracle.

The oracle at the end evaluates a random tree itself: it knows each literal's value
because it drew it (`8G` is drawn together with 8 GiB), and each string's numeric
meaning from a table, so it shares nothing with farmd but the rendered text.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farmd.errors import RequirementError, UserError
from farmd.requirements import NO_REQUIREMENT, Requirement, parse_requirement
from tests.strategies import PROPERTY_SETTINGS

GiB = 1024**3

HOST: dict[str, object] = {
    "os": "linux",
    "arch": "x86_64",
    "cpus": 16,
    "memory": 64 * GiB,
    "gpu": True,
    "ssd": False,
    "gpu_model": "a6000",
    "gpu.vendor": "nvidia",
    "drivers": "cuda, optix",
    "slots": "4",  # numeric strings, as `--property slots=4` might leave them
    "vram": "24G",
    "ratio": 2.5,
    "zero": 0,
    "blank": "",
    "off": "No",
    "tags": ["render", "sim"],
    "types": ("nuke", "blender"),
    "odd": {"a": 1},  # a type requirements do not read: equal to nothing, false
}
JOB: dict[str, object] = {"id": 7, "name": "shot010", "priority": 5, "type": None, "frames": 10}


def matches(text: str, host: Mapping[str, object] = HOST, job: Mapping[str, object] = JOB) -> bool:
    return parse_requirement(text).matches(host, job)


# --------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.os == linux", True),
        ("host.os == Linux", False),  # case-sensitive
        ("host.os == 'linux'", True),
        ('host.os == "linux"', True),
        ("host.os != linux", False),
        ("host.os != windows", True),
        ("host.arch == x86_64", True),
        ("host.gpu.vendor == nvidia", True),  # a key may hold dots
        ("host.cpus == 16", True),
        ("host.cpus == 16.0", True),
        ("host.cpus == '16'", True),  # a numeric string against a number
        ("host.slots == 4", True),
        ("host.slots == '4'", True),
        ("host.slots == '4.0'", False),  # two strings compare as strings
        ("host.vram == 24G", True),
        ("host.vram == 24", False),
        ("host.gpu == true", True),  # a bool equals the words for it
        ("host.gpu == yes", True),
        ("host.gpu == TRUE", True),
        ("host.ssd == false", True),
        ("host.ssd == '0'", True),
        ("host.gpu == 1", False),  # but a bool is not a number
        ("host.gpu == linux", False),
        ("host.missing == linux", False),
        ("host.missing != linux", True),
        ("host.missing == job.missing", True),  # None equals None
        ("host.tags == [render, sim]", True),
        ("host.tags == [sim, render]", False),
        ("host.types == [nuke, blender]", True),  # a tuple is a list
        ("host.odd == host.odd", False),
        ("job.name == shot010", True),
        ("job.type == None", False),  # `None` is a word; test a missing value with `not`
    ],
)
def test_equality(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.memory >= 32G", True),
        ("host.memory >= 64G", True),
        ("host.memory > 64G", False),
        ("host.memory <= 64G", True),
        ("host.memory < 64G", False),
        ("host.cpus >= 8", True),
        ("host.cpus < 8", False),
        ("host.slots >= 2", True),  # "4" reads as 4 against a number
        ("host.vram > 16G", True),
        ("host.slots > '10'", True),  # two strings order as strings: "4" > "10"
        ("host.ratio > 2", True),
        ("host.ratio < 2.5", False),
        ("job.priority < 10", True),
        ("job.priority > -1", True),
        ("host.os < m", True),  # by code point
        ("host.os > 5", False),  # a non-numeric string does not order with a number
        ("host.os < 5", False),
        ("host.missing < 5", False),  # None orders with nothing
        ("host.missing >= 5", False),
        ("host.gpu > 0", False),  # nor does a bool
        ("host.tags > 0", False),
        ("host.odd >= 0", False),
        ("5 < 6", True),
        ("-1 <= -1", True),
        ("16 > host.cpus", False),  # a literal may stand on the left
        ("job.frames >= job.priority", True),
        ("host.cpus > job.frames", True),
    ],
)
def test_ordering(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.gpu_model in [a6000, a100]", True),
        ("host.gpu_model in [a100]", False),
        ("host.gpu_model in []", False),
        ("host.cpus in [8, 16]", True),
        ("host.slots in [2, 4]", True),  # numeric string against numbers
        ("host.cpus in ['16', x]", True),
        ("host.memory in [64G]", True),
        ("cuda in host.drivers", True),  # a comma-separated string, items stripped
        ("optix in host.drivers", True),
        ("opti in host.drivers", False),
        ("host.os in 'linux, darwin'", True),
        ("host.os in 'linux,,darwin,'", True),
        ("'' in host.blank", False),  # an empty string has no items
        ("render in host.tags", True),
        ("host.missing in [a]", False),
        ("x in host.cpus", False),  # neither a list nor a string
        ("x in host.missing", False),
        ("host.drivers has cuda", True),
        ("host.tags has render", True),
        ("host.tags has comp", False),
        ("host.types has blender", True),
        ("host.os has linux", True),
        ("host.os has lin", False),
        ("host.cpus has 1", False),
        ("[a, b] has a", True),
        ("host.tags has host.missing", False),
    ],
)
def test_membership(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.gpu", True),
        ("host.ssd", False),
        ("host.missing", False),
        ("host.zero", False),
        ("host.cpus", True),
        ("host.ratio", True),
        ("host.blank", False),
        ("host.off", False),  # "No": false words in any case
        ("host.os", True),
        ("host.tags", True),
        ("host.odd", False),
        ("job.type", False),
        ("not host.ssd", True),
        ("!host.gpu", False),
        ("not job.type", True),
        ("0", False),
        ("1", True),
        ("linux", True),
        ("'no'", False),
        ("' FALSE '", False),
        ("[]", False),
        ("[a]", True),
    ],
)
def test_a_bare_value_is_a_test_of_truthiness(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.os == linux and host.cpus >= 8", True),
        ("host.os == linux && host.cpus >= 32", False),
        ("host.os == windows or host.gpu", True),
        ("host.os == windows || host.ssd", False),
        ("host.os==linux&&host.cpus>=8", True),  # no spaces needed around symbols
        ("not host.os == windows", True),  # `not` takes the whole comparison, as in Python
        ("!host.os == windows", True),
        ("not host.os in [linux]", False),
        # `and` binds tighter than `or`: (F and T) or T, not F and (T or T)
        ("host.ssd and host.gpu or host.cpus > 8", True),
        ("host.gpu or host.ssd and host.zero", True),
        # `not` binds tighter than `and` and `or`
        ("not host.gpu and host.ssd", False),
        ("not host.gpu or host.gpu", True),
        ("(host.gpu or host.ssd) and host.zero", False),
        ("not (host.gpu and host.ssd)", True),
        ("!!host.gpu", True),
        ("not not host.ssd", False),
        ("((host.gpu))", True),
        ("host.gpu and (host.ssd or (host.cpus > 8 and not host.zero))", True),
    ],
)
def test_boolean_operators_and_precedence(text: str, expected: bool) -> None:
    assert matches(text) is expected


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("8", 8),
        ("2.5", 2.5),
        ("8G", 8 * GiB),
        ("8g", 8 * GiB),
        ("512M", 512 * 1024**2),
        ("512m", 512 * 1024**2),
        ("1T", 1024**4),
        ("16k", 16 * 1024),
        ("16K", 16 * 1024),
        ("1.5K", 1536),
        ("2.5G", 2684354560),
        ("0.5", 0.5),
        ("1.1T", 1.1 * 1024**4),
        ("-2k", -2048),
        # whole results are exact ints: a float could not hold 2**62 + 512
        ("4503599627370496.5K", 2**62 + 512),
        ("9007199254740993", 2**53 + 1),
    ],
)
def test_number_units_are_powers_of_1024(literal: str, value: float) -> None:
    assert matches(f"host.v == {literal}", {"v": value})
    assert not matches(f"host.v == {literal}", {"v": value + 1})
    assert matches(f"host.v == {literal}", {"v": f" {literal} "})  # a string reads alike


def test_an_empty_requirement_always_matches() -> None:
    assert parse_requirement("") is NO_REQUIREMENT
    assert parse_requirement(" \t\n") is NO_REQUIREMENT
    assert str(NO_REQUIREMENT) == ""
    assert NO_REQUIREMENT.matches({}, {})
    assert NO_REQUIREMENT.first_false({}, {}) is None


def test_requirements_are_equal_and_hashed_by_their_stripped_text() -> None:
    requirement = parse_requirement("  host.os == linux \n")
    assert str(requirement) == requirement.source == "host.os == linux"
    assert requirement == parse_requirement("host.os == linux")
    assert len({requirement, parse_requirement("host.os == linux")}) == 1
    assert requirement != parse_requirement("host.os  == linux")
    assert isinstance(requirement, Requirement)


def test_a_long_chain_is_flat_not_deep() -> None:
    conjunction = "&&".join(["job.a"] * 580)  # 4058 characters, 580 clauses
    disjunction = "||".join(["job.a"] * 580)
    assert matches(conjunction, {}, {"a": 1})
    assert parse_requirement(conjunction).first_false({}, {"a": 0}) == "job.a"
    assert not matches(disjunction, {}, {"a": 0})


# --------------------------------------------------------------------------- first_false


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host.os == linux", None),
        ("host.os == windows", "host.os == windows"),
        ("host.os == linux and host.memory >= 128G", "host.memory >= 128G"),
        ("host.ssd and host.memory >= 128G", "host.ssd"),  # the first false conjunct
        ("host.gpu and (host.cpus > 8 and host.ssd)", "host.ssd"),  # recursively
        ("(host.gpu && host.zero) && host.ssd", "host.zero"),
        ("host.gpu and (host.ssd or host.zero)", "host.ssd or host.zero"),  # no parentheses
        ("host.gpu and not host.cpus > 8", "not host.cpus > 8"),
        ("host.os == windows or host.ssd", "host.os == windows or host.ssd"),
        ("not (host.gpu and host.cpus)", "not (host.gpu and host.cpus)"),
        ("  (host.os == windows)  ", "host.os == windows"),
        ("host.missing", "host.missing"),
    ],
)
def test_first_false_names_the_smallest_clause_that_fails(text: str, expected: str | None) -> None:
    requirement = parse_requirement(text)
    assert requirement.first_false(HOST, JOB) == expected
    assert requirement.matches(HOST, JOB) is (expected is None)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("host.memory >= 8G andd x", 19, "expected 'and', 'or' or the end, got 'andd'"),
        ("host.os = linux", 9, "use '=='"),
        ("host.memory => 8G", 13, "use '>='"),
        ("host.memory >= 8X", 17, "unknown unit 'X'"),
        ("host.memory >= 8GB", 17, "unknown unit 'GB'"),
        ("host.memory >= 1.2.3", 16, "bad number '1.2.3'"),
        ("host.v > " + "9" * 400 + ".5", 10, "too large"),
        ("host.os == 'linux", 12, "unterminated string"),
        ("x == \"a'", 6, "unterminated string"),
        ("()", 1, "empty parentheses"),
        ("host.gpu and ( )", 14, "empty parentheses"),
        ("host.os ==", 11, "expected a value after '==', got the end"),
        ("host.os == linux and", 21, "expected a test after 'and', got the end"),
        ("host.os == linux ||", 20, "after '||'"),
        ("not", 4, "expected a test after 'not'"),
        ("x and or y", 7, "got 'or'"),
        ("== x", 1, "expected a test"),
        ("hosts.os == linux", 1, "unknown namespace 'hosts'"),
        ("host.os == linux and Job.type", 22, "unknown namespace 'Job'"),
        ("host == x", 1, "'host' alone"),
        ("host. == x", 6, "property name after 'host.'"),
        ("job.9 == x", 5, "property name after 'job.'"),
        ("(host.os == linux", 18, "to close the '(' at column 1, got the end"),
        ("host.os == linux)", 17, "got ')'"),
        ("host.os linux", 9, "expected an operator"),
        ("a == b == c", 8, "do not chain"),
        ("a not in [b]", 3, "'not' goes before a test"),
        ("a AND b", 3, "lower case"),
        ("(a OR b)", 4, "lower case"),
        ("x in [a, host.os]", 10, "a number or a string in the list"),
        ("x in [a,]", 9, "a list item after ','"),
        ("x in [a b]", 9, "to close the '[' at column 6"),
        ("x in [a", 8, "got the end"),
        ("x in [[a]]", 7, "got '['"),
        ("(x) == y", 5, "got '=='"),
        ("x @ y", 3, "unexpected character '@'"),
        ("x == é", 6, "unexpected character 'é'"),
        ("x == -", 6, "unexpected character '-'"),
        ("a & b", 3, "'&&' or 'and'"),
        ("a | b", 3, "'||' or 'or'"),
        ("  a ==", 7, "got the end"),  # columns count the text as given
        ("a ==  \n ", 5, "got the end"),  # the end is just after the last character
    ],
)
def test_bad_requirements_are_refused_naming_the_column(
    text: str, column: int, fragment: str
) -> None:
    with pytest.raises(RequirementError) as caught:
        parse_requirement(text)
    message = str(caught.value)
    assert message.startswith(f"bad requirement {text!r}: column {column}: "), message
    assert fragment in message
    assert len(message.splitlines()) == 1


def test_nesting_is_capped_at_64_levels() -> None:
    assert matches("(" * 64 + "host.gpu" + ")" * 64)
    assert matches("not " * 64 + "host.gpu")  # an even number of them
    assert not matches("not " * 63 + "host.gpu")
    assert matches("not (" * 32 + "host.gpu" + ")" * 32)
    cases = [("(" * 65 + "x" + ")" * 65, 65), ("not " * 65 + "x", 257), ("!" * 65 + "x", 65)]
    for text, column in cases:
        with pytest.raises(RequirementError, match=rf": column {column}: nested deeper than 64"):
            parse_requirement(text)


def test_length_is_capped_at_4096_characters() -> None:
    assert matches("x" * 4096)  # one long word: a string, so true
    assert matches(" " * 5000 + "x" + " " * 5000)  # blanks around it do not count
    with pytest.raises(RequirementError, match=r"\(4097 characters\): column 4097: longer than"):
        parse_requirement("x" * 4097)
    with pytest.raises(RequirementError, match=r": column 4107: "):
        parse_requirement(" " * 10 + "x" * 4097)


class _BadRepr:
    def __repr__(self) -> str:
        raise ValueError("no repr")


class _TwoLineRepr:
    def __repr__(self) -> str:
        return "two\nlines"


@pytest.mark.parametrize("value", [None, 42, b"host.gpu", ["host.gpu"], _BadRepr(), _TwoLineRepr()])
def test_a_requirement_that_is_not_a_string_is_refused(value: object) -> None:
    with pytest.raises(RequirementError, match="must be a string") as caught:
        parse_requirement(value)
    assert len(str(caught.value).splitlines()) == 1


def test_requirement_errors_are_user_errors_with_their_own_code() -> None:
    with pytest.raises(UserError) as caught:
        parse_requirement("a =")
    assert isinstance(caught.value, RequirementError)
    assert caught.value.code == "bad_requirement"


# --------------------------------------------------------------------------- any text

FRAGMENTS = [
    *["host.", "job.", "hosts.", "os", "gpu", "a", "b.c", "x86_64", "-", ".", "_"],
    *["==", "=", "!=", "<", "<=", ">", ">=", "=>", "!", "&&", "||", "&", "|"],
    *["and", "or", "not", "in", "has", "AND", "(", ")", "[", "]", ","],
    *["'", '"', "'x'", "0", "8", "8G", "8X", "2.5", "1.2.3", "-3"],
    *[" ", "  ", "\t", "\n", "\r", "\u2028", "\x85", "\x00", "é", "\ud800", "@"],
]
texts = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join),
)


@PROPERTY_SETTINGS
@given(text=texts)
def test_any_text_parses_or_is_refused_in_one_line(text: str) -> None:
    try:
        requirement = parse_requirement(text)
    except RequirementError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert re.match(r"bad requirement .*: column \d+: ", message), message
        return
    assert isinstance(requirement, Requirement)
    assert str(requirement) == text.strip()
    assert parse_requirement(str(requirement)) == requirement
    requirement.matches(HOST, JOB)  # never raises
    requirement.first_false(HOST, JOB)


# --------------------------------------------------------------------------- the oracle

# Strings drawn as literals or facts, with the number each reads as (None: not a number).
# Every item of the comma-separated ones is itself here, so the oracle can look it up.
# The pools are small so that values drawn apart often meet: a fact "16" and a literal
# 16, a fact True and a word "yes", a list and an item of it.
NUMERIC_STRINGS = {"16": 16, " 16 ": 16, "0": 0, "2.5": 2.5, "8G": 8 * GiB}
OTHER_STRINGS = ["yes", "no", "true", "linux", "", "8X", "linux,16", "16, 8G", "yes,,no"]
WORDS = ["linux", "yes", "no", "true", "False", "v1.2"]
STRING_NUMBERS: dict[str, float | None] = {
    **NUMERIC_STRINGS,
    **dict.fromkeys(OTHER_STRINGS),
    **dict.fromkeys(WORDS),
}
NUMBER_TEXTS = [
    *[("0", 0), ("16", 16), ("16.0", 16), ("0.015625K", 16), ("2.5", 2.5), ("-3", -3)],
    *[("8G", 8 * GiB), ("8g", 8 * GiB), ("0.0078125k", 8), ("1T", 1024**4)],
]
KEYS = ["a", "gpu.model", "missing"]
OPERATORS = ["==", "!=", "<", "<=", ">", ">=", "in", "has"]
BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclasses.dataclass(frozen=True)
class Literal:
    text: str
    value: object


@dataclasses.dataclass(frozen=True)
class Prop:
    namespace: str
    key: str


@dataclasses.dataclass(frozen=True)
class ListOf:
    items: tuple[Literal, ...]


Operand = Literal | Prop | ListOf


@dataclasses.dataclass(frozen=True)
class Compare:
    operator: str
    left: Operand
    right: Operand


@dataclasses.dataclass(frozen=True)
class Truth:
    operand: Operand


@dataclasses.dataclass(frozen=True)
class Not:
    spelling: str
    inner: Node


@dataclasses.dataclass(frozen=True)
class Chain:
    operator: str  # "and" or "or"
    spelling: str
    parts: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class Group:
    inner: Node


Node = Compare | Truth | Not | Chain | Group


def _quoted(text: str, quote: str) -> Literal:
    return Literal(f"{quote}{text}{quote}", text)


literals = st.one_of(
    st.sampled_from(NUMBER_TEXTS).map(lambda pair: Literal(*pair)),
    st.builds(_quoted, st.sampled_from(sorted(STRING_NUMBERS)), st.sampled_from(["'", '"'])),
    st.sampled_from(WORDS).map(lambda word: Literal(word, word)),
)
props = st.builds(Prop, st.sampled_from(["host", "job"]), st.sampled_from(KEYS))
lists = st.lists(literals, max_size=3).map(lambda xs: ListOf(tuple(xs)))
operands: st.SearchStrategy[Operand] = st.one_of(props, props, literals, lists)
operators = st.sampled_from(OPERATORS)
# Mostly a fact against a value: there the semantics live (literals alone fold to one).
comparisons = st.one_of(
    st.builds(Compare, operators, props, st.one_of(literals, lists)),
    st.builds(Compare, operators, st.one_of(literals, lists), props),
    st.builds(Compare, operators, props, props),
    st.builds(Compare, operators, operands, operands),
)
leaves: st.SearchStrategy[Node] = st.one_of(comparisons, comparisons, st.builds(Truth, operands))


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    chain = st.sampled_from([("and", "and"), ("and", "&&"), ("or", "or"), ("or", "||")])
    return st.one_of(
        st.builds(Not, st.sampled_from(["not", "!"]), children),
        st.builds(
            lambda spelled, parts: Chain(spelled[0], spelled[1], tuple(parts)),
            chain,
            st.lists(children, min_size=2, max_size=3),
        ),
        st.builds(Group, children),
    )


trees = st.recursive(leaves, _extend, max_leaves=10)

FACT_STRINGS = sorted(STRING_NUMBERS)
fact_values = st.one_of(
    st.booleans(),
    st.sampled_from([0, 16, -3, 8 * GiB]),
    st.sampled_from([2.5, 16.0, math.nan]),
    st.sampled_from(FACT_STRINGS),
    st.sampled_from(sorted(NUMERIC_STRINGS)),
    st.lists(st.one_of(st.sampled_from(FACT_STRINGS), st.sampled_from([0, 16])), max_size=3),
    st.lists(st.sampled_from(FACT_STRINGS), max_size=3).map(tuple),
    st.none(),
    st.just({"a": 1}),
)
# every key but "missing" is there (perhaps as None)
facts = st.fixed_dictionaries(dict.fromkeys(KEYS[:-1], fact_values))


def walk(node: Node) -> list[Node]:
    """The node and every test below it."""
    match node:
        case Not(_, inner) | Group(inner):
            return [node, *walk(inner)]
        case Chain(_, _, parts):
            return [node, *(sub for part in parts for sub in walk(part))]
    return [node]


def render(node: Node) -> str:
    match node:
        case Compare(operator, left, right):
            return f"{render_operand(left)} {operator} {render_operand(right)}"
        case Truth(operand):
            return render_operand(operand)
        case Not(spelling, inner):
            text = f"({render(inner)})" if isinstance(inner, Chain) else render(inner)
            return f"not {text}" if spelling == "not" else f"!{text}"
        case Chain(operator, spelling, parts):
            shown = [
                f"({render(part)})"
                if operator == "and" and isinstance(part, Chain) and part.operator == "or"
                else render(part)
                for part in parts
            ]
            return f" {spelling} ".join(shown)
        case Group(inner):
            return f"({render(inner)})"
    raise AssertionError(node)


def render_operand(operand: Operand) -> str:
    match operand:
        case Literal(text, _):
            return text
        case Prop(namespace, key):
            return f"{namespace}.{key}"
        case ListOf(items):
            return "[" + ", ".join(item.text for item in items) + "]"
    raise AssertionError(operand)


def oracle(node: Node, host: Mapping[str, object], job: Mapping[str, object]) -> bool:
    match node:
        case Compare(operator, left, right):
            a, b = value_of(left, host, job), value_of(right, host, job)
            if operator == "==":
                return same(a, b)
            if operator == "!=":
                return not same(a, b)
            if operator == "in":
                return contains(b, a)
            if operator == "has":
                return contains(a, b)
            return ordered(operator, a, b)
        case Truth(operand):
            return truthy(value_of(operand, host, job))
        case Not(_, inner):
            return not oracle(inner, host, job)
        case Chain("and", _, parts):
            return all(oracle(part, host, job) for part in parts)
        case Chain(_, _, parts):
            return any(oracle(part, host, job) for part in parts)
        case Group(inner):
            return oracle(inner, host, job)
    raise AssertionError(node)


def value_of(operand: Operand, host: Mapping[str, object], job: Mapping[str, object]) -> Any:
    match operand:
        case Literal(_, value):
            return value
        case Prop(namespace, key):
            return (host if namespace == "host" else job).get(key)
        case ListOf(items):
            return [item.value for item in items]
    raise AssertionError(operand)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_number(value: object) -> Any:
    """The number a value stands for against a number, or None."""
    if is_number(value):
        return value
    return STRING_NUMBERS[value] if isinstance(value, str) else None


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        flag, other = (a, b) if isinstance(a, bool) else (b, a)
        if isinstance(other, bool):
            return flag == other
        return isinstance(other, str) and BOOL_WORDS.get(other.strip().lower()) == flag
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        both = isinstance(a, list | tuple) and isinstance(b, list | tuple)
        return both and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if is_number(a) or is_number(b):
        x, y = as_number(a), as_number(b)
        return x is not None and y is not None and x == y
    return False


def ordered(operator: str, a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        x, y = a, b
    elif is_number(a) or is_number(b):
        x, y = as_number(a), as_number(b)
        if x is None or y is None:
            return False
    else:
        return False
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[operator]


def contains(group: Any, item: Any) -> bool:
    if isinstance(group, str):
        group = [part.strip() for part in group.split(",") if part.strip()]
    if not isinstance(group, list | tuple):
        return False
    return any(same(item, member) for member in group)


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0")
    if isinstance(value, bool | int | float | list | tuple):
        return bool(value)
    return False


@settings(PROPERTY_SETTINGS, max_examples=600)
@given(tree=trees, host=facts, job=facts)
def test_random_requirements_agree_with_the_oracle(
    tree: Node, host: dict[str, object], job: dict[str, object]
) -> None:
    # every clause on its own too: a whole tree hides most of its leaves' answers
    for node in walk(tree):
        text = render(node)
        assert parse_requirement(text).matches(host, job) is oracle(node, host, job), text
    text = render(tree)
    requirement = parse_requirement(text)
    clause = requirement.first_false(host, job)
    if oracle(tree, host, job):
        assert clause is None
    else:
        # the clause it names is part of the text, and false on its own
        assert clause is not None
        assert clause in text
        assert parse_requirement(clause).matches(host, job) is False


@PROPERTY_SETTINGS
@given(tree=trees, before=st.sampled_from(["", " ", "\n\t"]), after=st.sampled_from(["", "  "]))
def test_the_text_of_a_requirement_parses_back_to_it(tree: Node, before: str, after: str) -> None:
    requirement = parse_requirement(before + render(tree) + after)
    assert str(requirement) == render(tree)
    again = parse_requirement(str(requirement))
    assert again == requirement
    assert hash(again) == hash(requirement)
