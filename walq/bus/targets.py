"""Rule targets: ``walq.Target`` and ``walq.InputTransformer``, their
validation (EventBridge's refusals), and what a target gets for an event
(``input``, ``input_path``, ``input_transformer``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from walq.errors import InvalidParameter

_TARGET_ID = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
#: EventBridge's dot-notation JSON paths: ``$``, ``.name`` steps, ``[n]`` indices.
_PATH = re.compile(r"^\$(\.[A-Za-z0-9_\-/]+|\[\d+\])*$")
_STEP = re.compile(r"\.([A-Za-z0-9_\-/]+)|\[(\d+)\]")
_VAR = re.compile(r"^[A-Za-z0-9_\-.]{1,256}$")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_\-.]+)>")
PREDEFINED = ("aws.events.rule-arn", "aws.events.rule-name", "aws.events.event.ingestion-time",
              "aws.events.event", "aws.events.event.json")
MAX_INPUT = 8192
MAX_PATHS = 100


@dataclass(frozen=True)
class InputTransformer:
    """EventBridge's InputTransformer: ``paths`` (variable -> JSON path into
    the event, at most 100) and ``template`` (text with ``<variable>``
    placeholders, 1-8192 characters)."""

    paths: dict = field(default_factory=dict)
    template: str = ""


@dataclass(frozen=True)
class Target:
    """One target of a rule: ``id`` (1-64 of ``[.-_A-Za-z0-9]``), an
    ``endpoint`` (a walq.Queue of the same store), and at most one of
    ``input``, ``input_path``, ``input_transformer``."""

    id: str
    endpoint: object
    input: object = None
    input_path: str | None = None
    input_transformer: InputTransformer | None = None
    retry: object = None
    dead_letter: object = None


def check_path(path, what: str) -> str:
    """``path`` if it is a JSON path EventBridge accepts; InvalidParameter otherwise."""
    if not isinstance(path, str) or not _PATH.match(path) or len(path) > 256:
        raise InvalidParameter(f"{what} {path!r} is not a valid JSON path: use dot notation from $ "
                               "(letters, digits, _ - /) with [n] array indices, e.g. $.detail.items[0]")
    return path


def resolve(path: str, event):
    """(found, value) of ``path`` in ``event``."""
    cur = event
    for name, index in _STEP.findall(path[1:]):
        if name:
            if not isinstance(cur, dict) or name not in cur:
                return False, None
            cur = cur[name]
        else:
            i = int(index)
            if not isinstance(cur, list) or i >= len(cur):
                return False, None
            cur = cur[i]
    return True, cur


def _check_input(value) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"))
    elif isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            raise InvalidParameter(f"input must be valid JSON text; got {value[:60]!r}") from None
        text = value
    else:
        raise InvalidParameter(f"input must be JSON text or a dict; got {type(value).__name__}")
    if len(text) > MAX_INPUT:
        raise InvalidParameter(f"input is {len(text)} characters; at most {MAX_INPUT}")
    return text


def _check_transformer(tr) -> dict:
    if not isinstance(tr, InputTransformer):
        raise InvalidParameter("input_transformer must be a walq.InputTransformer(paths={...}, template=...)")
    if not isinstance(tr.paths, dict):
        raise InvalidParameter("input_transformer paths must be a dict of variable -> JSON path")
    if len(tr.paths) > MAX_PATHS:
        raise InvalidParameter(f"input_transformer has {len(tr.paths)} paths; at most {MAX_PATHS}")
    for name, path in tr.paths.items():
        if not isinstance(name, str) or not _VAR.match(name):
            raise InvalidParameter(f"input_transformer variable {name!r}: use 1-256 of A-Z a-z 0-9 _ - .")
        if name in PREDEFINED or name.startswith("aws."):
            raise InvalidParameter(f"input_transformer variable {name!r} is reserved (names starting with aws.)")
        check_path(path, f"input_transformer path for {name!r}")
    t = tr.template
    if not isinstance(t, str) or not 1 <= len(t) <= MAX_INPUT:
        raise InvalidParameter(f"input_transformer template must be 1-{MAX_INPUT} characters of text")
    for name in _PLACEHOLDER.findall(t):
        if name not in tr.paths and name not in PREDEFINED:
            raise InvalidParameter(f"input_transformer template uses <{name}>, which is not in its paths")
    if t.lstrip().startswith("{"):
        # A JSON template: valid once each placeholder is a JSON value, never an object key.
        if re.search(r'"<[A-Za-z0-9_\-.]+>"\s*:', t):
            raise InvalidParameter("input_transformer template: a placeholder cannot be an object key")
        probe = _PLACEHOLDER.sub("null", _quoted_placeholders_to_text(t))
        try:
            json.loads(probe)
        except ValueError:
            raise InvalidParameter("input_transformer template starts with { but is not valid JSON "
                                   "once its placeholders are filled") from None
    return {"paths": dict(tr.paths), "template": t}


def _quoted_placeholders_to_text(t: str) -> str:
    """``t`` with placeholders inside JSON strings replaced by plain text."""
    out, in_str, i = [], False, 0
    while i < len(t):
        c = t[i]
        if in_str:
            if c == "\\":
                out.append(t[i:i + 2])
                i += 2
                continue
            if c == '"':
                in_str = False
            elif c == "<":
                m = _PLACEHOLDER.match(t, i)
                if m:
                    out.append("x")
                    i = m.end()
                    continue
        elif c == '"':
            in_str = True
        out.append(c)
        i += 1
    return "".join(out)


def shape_fields(input=None, input_path=None, input_transformer=None) -> dict:
    """The stored form of a target's input options; InvalidParameter for
    more than one or an invalid one."""
    given = [n for n, v in (("input", input), ("input_path", input_path),
                            ("input_transformer", input_transformer)) if v is not None]
    if len(given) > 1:
        raise InvalidParameter(f"a target takes at most one of input, input_path, input_transformer; "
                               f"got {' and '.join(given)}")
    if input is not None:
        return {"input": _check_input(input)}
    if input_path is not None:
        return {"input_path": check_path(input_path, "input_path")}
    if input_transformer is not None:
        return {"input_transformer": _check_transformer(input_transformer)}
    return {}


def check_target_id(tid) -> str:
    """``tid`` if EventBridge accepts it as a target id."""
    if not isinstance(tid, str) or not _TARGET_ID.match(tid):
        raise InvalidParameter(f"target id {tid!r}: use 1-64 characters of A-Z a-z 0-9 . - _")
    return tid


def render(target: dict, event: dict, rule_arn: str, rule_name: str, ingestion_time: str) -> str:
    """The text a target gets for ``event``."""
    if "input" in target:
        return target["input"]
    if "input_path" in target:
        found, value = resolve(target["input_path"], event)
        return json.dumps(value if found else None)
    tr = target.get("input_transformer")
    if tr is None:
        return json.dumps(event)
    values = {}
    for name, path in tr["paths"].items():
        values[name] = resolve(path, event)
    values["aws.events.rule-arn"] = (True, rule_arn)
    values["aws.events.rule-name"] = (True, rule_name)
    values["aws.events.event.ingestion-time"] = (True, ingestion_time)
    raw = {"aws.events.event": {k: v for k, v in event.items() if k != "detail"},
           "aws.events.event.json": event}
    return _fill(tr["template"], values, raw)


def _as_text(found: bool, value) -> str:
    if not found or value is None:
        return "" if not found else "null"
    return value if isinstance(value, str) else json.dumps(value)


def _fill(t: str, values: dict, raw: dict) -> str:
    """Fills the template: inside a JSON string a placeholder becomes text
    (escaped for the string); outside one, a JSON value (a string quoted);
    in a template that is not JSON, plain text."""
    is_json = t.lstrip().startswith(("{", "["))
    out, in_str, i = [], False, 0
    while i < len(t):
        c = t[i]
        if c == "<":
            m = _PLACEHOLDER.match(t, i)
            if m:
                name = m.group(1)
                if name in raw:
                    out.append(json.dumps(raw[name]))
                else:
                    found, value = values.get(name, (False, None))
                    if not is_json:
                        out.append(_as_text(found, value))
                    elif in_str:
                        out.append(json.dumps(_as_text(found, value))[1:-1])
                    else:
                        out.append(json.dumps(value if found else None))
                i = m.end()
                continue
        if is_json:
            if in_str and c == "\\":
                out.append(t[i:i + 2])
                i += 2
                continue
            if c == '"':
                in_str = not in_str
        out.append(c)
        i += 1
    return "".join(out)
