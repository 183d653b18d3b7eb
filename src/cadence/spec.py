"""The schedule spec language: text ⇄ schedule objects ⇄ dicts (and so YAML/JSON).

Text::

    wsd(peak=3e-4, warmup=1%, decay=20%, shape=1-sqrt, floor=0.1)
    join(warmup(cosine(peak=1e-3), 500 steps), constant(1e-5), at=[90%])

A call is ``name(args)``; schedule-valued parameters may be given by position, the rest by
keyword. Values are numbers (``3e-4``, ``-0.51``), fractions (``2%``, ``0.02``), amounts
(``500 steps``, ``2M tokens``, ``30 min``), words (``1-sqrt``, ``true``), quoted strings, lists
``[a, b]``, and nested calls (a bare number where a schedule is expected is a constant).

Dict form — the same tree, one dict per call::

    {"type": "wsd", "peak": 3e-4, "warmup": "1%", "decay": "20%", "shape": "1-sqrt", "floor": 0.1}

    >>> s = parse("wsd(peak=3e-4, warmup=1%, decay=20%)")
    >>> parse(str(s)) == s and from_dict(to_dict(s)) == s
    True
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
from typing import Any

from cadence.clock import Duration, _format_number, unit_alias
from cadence.errors import CadenceError, SpecError
from cadence.schedules.base import MAX_DEPTH, REGISTRY, Schedule

_WORD = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*")
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?([kKMBGT](?![A-Za-z0-9_]))?")
_UNIT = re.compile(r"\s*(%|[A-Za-z]+)")
_PUNCT = "()[],="


@dataclasses.dataclass
class _Token:
    kind: str  # "num", "word", "str", or a punctuation character, or "end"
    text: str
    pos: int
    value: Any = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in _PUNCT:
            tokens.append(_Token(c, c, i))
            i += 1
        elif c in "'\"":
            j = text.find(c, i + 1)
            if j < 0:
                raise SpecError("unterminated string", text, i)
            tokens.append(_Token("str", text[i : j + 1], i, text[i + 1 : j]))
            i = j + 1
        else:
            tokens.append(_number_or_word(text, i))
            i = tokens[-1].pos + len(tokens[-1].text)
    tokens.append(_Token("end", "", n))
    return tokens


def _number_or_word(text: str, i: int) -> _Token:
    """A number with its optional unit (``500 steps``, ``2%``, ``2M tokens``), else a word."""
    m = _NUM.match(text, i)
    w = _WORD.match(text, i)
    if m and not (w and w.end() > m.end()):  # a number not glued to more word characters
        end = m.end()
        rest = _UNIT.match(text, end)  # matched in place: slicing the rest of the text would be quadratic
        if rest:  # only a unit may follow a number
            if rest.group(1) != "%" and not unit_alias(rest.group(1)):
                raise SpecError(f"unknown unit {rest.group(1)!r}; use %, steps, samples, tokens, s, min or h",
                                text, rest.start(1))
            end = rest.end()
            try:
                return _Token("num", text[i:end], i, Duration.parse(text[i:end]))
            except CadenceError as e:
                raise SpecError(str(e), text, i) from None
        if m.group(1):  # a magnitude suffix needs a unit
            raise SpecError(f"{text[i:end]!r} needs a unit, e.g. '{text[i:end]} tokens'", text, i)
        return _Token("num", text[i:end], i, float(text[i:end]))
    if w:
        word = w.group(0)
        return _Token("word", word, i, word)
    raise SpecError(f"unexpected character {text[i]!r}", text, i)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0  # calls and lists open around the current token

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self, kind: str | None = None) -> _Token:
        tok = self.tokens[self.i]
        if kind is not None and tok.kind != kind:
            want = {"end": "end of spec"}.get(kind, repr(kind))
            got = "end of spec" if tok.kind == "end" else repr(tok.text)
            raise SpecError(f"expected {want}, found {got}", self.text, tok.pos)
        self.i += 1
        return tok

    def expr(self) -> Any:
        tok = self.peek()
        if tok.kind == "[" or tok.kind == "word" and self.tokens[self.i + 1].kind == "(":
            if self.depth >= MAX_DEPTH:
                raise SpecError(f"the spec nests calls and lists more than {MAX_DEPTH} deep", self.text, tok.pos)
            self.depth += 1
            out = self.call() if tok.kind == "word" else self.list()
            self.depth -= 1
            return out
        if tok.kind in ("num", "word", "str"):
            self.take()
            if tok.kind == "word" and tok.value in ("true", "false"):
                return tok.value == "true"
            return tok.value
        got = "end of spec" if tok.kind == "end" else repr(tok.text)
        raise SpecError(f"expected a value, found {got}", self.text, tok.pos)

    def list(self) -> list[Any]:
        self.take("[")
        items = []
        while self.peek().kind != "]":
            items.append(self.expr())
            if self.peek().kind != "]":
                self.take(",")
        self.take("]")
        return items

    def call(self) -> Schedule:
        name_tok = self.take("word")
        cls = REGISTRY.get(name_tok.value)
        if cls is None:
            raise SpecError(f"unknown schedule {name_tok.value!r}; known: {', '.join(sorted(REGISTRY))}", self.text, name_tok.pos)
        self.take("(")
        args: list[tuple[int, Any]] = []
        kwargs: dict[str, tuple[int, Any]] = {}
        while self.peek().kind != ")":
            tok = self.peek()
            if tok.kind == "word" and self.tokens[self.i + 1].kind == "=":
                self.take()
                self.take("=")
                if tok.value in kwargs:
                    raise SpecError(f"parameter {tok.value!r} given twice", self.text, tok.pos)
                kwargs[tok.value] = (tok.pos, self.expr())
            else:
                value = self.expr()
                if kwargs:
                    raise SpecError("positional argument after a keyword argument", self.text, tok.pos)
                args.append((tok.pos, value))
            if self.peek().kind != ")":
                self.take(",")
        self.take(")")
        try:
            return build(cls, [a for _, a in args], {k: v for k, (_, v) in kwargs.items()})
        except CadenceError as e:
            pos = kwargs[e.param][0] if isinstance(e, SpecError) and e.param in kwargs else name_tok.pos
            raise SpecError(str(e), self.text, pos) from None


def parse(text: str) -> Schedule:
    """Parse a spec string into a schedule. Raises :class:`SpecError` with the position on error."""
    if not isinstance(text, str):
        raise SpecError(f"a spec must be a string, got {type(text).__name__}")
    p = _Parser(text)
    out = p.expr()
    p.take("end")
    if not isinstance(out, Schedule):
        from cadence.schedules.base import as_schedule

        if isinstance(out, (int, float)) and not isinstance(out, bool):
            return as_schedule(out)
        raise SpecError(f"a spec must be a schedule such as 'cosine(peak=1e-3)', got {text!r}", text, 0)
    return out


def build(cls: type[Schedule], args: list[Any], kwargs: dict[str, Any]) -> Schedule:
    """Construct ``cls`` from positional and keyword values, checking names and arity."""
    fields = [f for f in dataclasses.fields(cls)]
    names = {f.name for f in fields}
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise SpecError(f"{cls.name}: unknown parameter {unknown[0]!r}; takes {', '.join(f.name for f in fields)}")
    values: dict[str, Any] = {}
    variadic = next((f for f in fields if str(f.type).startswith("tuple[Schedule")), None)
    if variadic is not None:
        values[variadic.name] = list(args) if args else kwargs.get(variadic.name, [])
    else:
        if len(args) > len(fields):
            raise SpecError(f"{cls.name}: takes at most {len(fields)} positional arguments, got {len(args)}")
        for f, a in zip(fields, args):
            if f.name in kwargs:
                raise SpecError(f"{cls.name}: parameter {f.name!r} given twice")
            values[f.name] = a
    for k, v in kwargs.items():
        if k not in values:
            values[k] = v
    missing = [f.name for f in fields if f.name not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise SpecError(f"{cls.name}: missing parameter {missing[0]!r}")
    try:
        return cls(**values)
    except TypeError as e:  # should not happen after the checks above, but never leak it
        raise SpecError(f"{cls.name}: {e}") from None


# ---------------------------------------------------------------------- printing
def _is_schedule_field(f: dataclasses.Field) -> bool:
    return str(f.type) == "Schedule" or str(f.type).startswith("tuple[Schedule")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _same(value: Any, default: Any, f: dataclasses.Field) -> bool:
    if default is dataclasses.MISSING:
        return False
    kind = str(f.type)
    if kind.startswith("Duration") and default is not None:
        return value == Duration.parse(default)
    if kind.startswith("tuple[Duration"):
        return value == tuple(Duration.parse(d) for d in default)
    return value == default


def _fmt(v: Any) -> str:
    if isinstance(v, Schedule):
        return to_spec(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _format_number(v)
    if isinstance(v, Duration):
        return str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        return v if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*|1-sqrt|1-square", v) else repr(v)
    return str(v)


def to_spec(s: Schedule, *, defaults: bool = False) -> str:
    """The spec text of a schedule; ``parse(to_spec(s)) == s``. ``defaults=True`` also writes the
    parameters left at their defaults (what ``cadence show`` echoes, so every value applied is seen);
    optional parameters left unset (derived from others) stay out.

        >>> to_spec(parse("cosine(peak=1)"), defaults=True)
        'cosine(peak=1, floor=0, cycles=0.5)'
    """
    parts = []
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if _is_schedule_field(f):
            parts.extend(to_spec(x, defaults=defaults) if isinstance(x, Schedule) else _fmt(x)
                         for x in (v if isinstance(v, tuple) else (v,)))
        elif (defaults and v is not None) or not _same(v, _default(f), f):
            parts.append(f"{f.name}={_fmt(v)}")
    return f"{s.name}({', '.join(parts)})"


def to_dict(s: Schedule) -> dict[str, Any]:
    """The dict form of a schedule (JSON/YAML-ready); ``from_dict(to_dict(s)) == s``."""
    out: dict[str, Any] = {"type": s.name}
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if _same(v, _default(f), f) and not _is_schedule_field(f):
            continue
        out[f.name] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, Schedule):
        return to_dict(v)
    if isinstance(v, Duration):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def from_dict(d: dict[str, Any]) -> Schedule:
    """Build a schedule from its dict form (nested dicts for nested schedules, at most
    :data:`~cadence.schedules.base.MAX_DEPTH` deep)."""
    return _from_dict(d, 1)


def _from_dict(d: Any, depth: int) -> Schedule:
    if not isinstance(d, dict) or "type" not in d:
        raise SpecError(f"a schedule dict needs a 'type' key, got {_brief(d)}")
    kind = d["type"]
    cls = REGISTRY.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise SpecError(f"unknown schedule {_brief(kind)}; the 'type' must be one of: {', '.join(sorted(REGISTRY))}")
    kwargs = {k: _unplain(v, depth) for k, v in d.items() if k != "type"}
    return build(cls, [], kwargs)


def _unplain(v: Any, depth: int) -> Any:
    if isinstance(v, (dict, list)):
        if depth >= MAX_DEPTH:
            raise SpecError(f"the schedule dict nests schedules and lists more than {MAX_DEPTH} deep")
        if isinstance(v, dict):
            return _from_dict(v, depth + 1)
        schedules = bool(v) and all(isinstance(x, dict) for x in v)  # join(a, b): the list adds no level,
        return [_unplain(x, depth if schedules else depth + 1) for x in v]  # as in the text and Schedule.depth
    return v


def _brief(v: Any) -> str:
    """``repr(v)``, shortened (a malformed dict may be huge or deeply nested)."""
    try:
        text = reprlib.repr(v)
    except Exception:  # e.g. an int too long to print
        return type(v).__name__
    return text

