"""Decode a web-form body (JSON, urlencoded, multipart) into fields, the same way at the edge and in the pipeline."""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from leadhub.json_errors import encoding_note, json_error_text, loads, read_in
from leadhub.storable_text import first_unstorable, unstorable

JSON_TYPES = ("application/json",)
URLENCODED_TYPES = ("application/x-www-form-urlencoded",)
MULTIPART_TYPES = ("multipart/form-data",)
SUPPORTED_TYPES = JSON_TYPES + URLENCODED_TYPES + MULTIPART_TYPES
_CHARSET_PARAM = re.compile(r';\s*charset\s*=\s*"?([^";\s]*)', re.IGNORECASE)
# Python codecs that are no charset a page or client declares, and that could make any text out of any bytes.
_NOT_A_CHARSET = {"unicode_escape", "raw_unicode_escape", "punycode", "idna", "undefined"}
# What the form pipeline reads into the contact and the message; a connector's `fields:` maps onto these.
LEADHUB_FIELDS = ("name", "phone", "email", "message", "company")


class FormDecodeError(ValueError):
    """The body cannot be read as the content type it claims."""


class UnsupportedContentType(FormDecodeError):
    """The content type is not one a form connector accepts."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    field: str
    filename: str
    content_type: str
    size: int
    sha256: str


@dataclass(slots=True)
class FormData:
    fields: dict[str, Any] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)


def media_type(content_type: str) -> str:
    """`Multipart/Form-Data; boundary=x` -> `multipart/form-data`."""
    return content_type.split(";", 1)[0].strip().lower()


def checked_field_mapping(mapping: dict[str, str]) -> dict[str, str]:
    """A connector's `fields:` with its targets in lower case, or ValueError naming a target the pipeline never reads:
    such a value would only be kept on the inquiry, and the contact would get no name or phone from it. Names are
    matched in any case (`mapped_name`), so two that differ only in case are one name mapped twice: refused."""
    seen: dict[str, str] = {}
    for their in mapping:
        if (first := seen.setdefault(mapped_name(their), their)) != their:
            raise ValueError(f"{first!r} and {their!r} are one name: names are matched in any case; map it once")
    lowered = {their: target.strip().lower() for their, target in mapping.items()}
    if wrong := [
        f"{their!r} -> {mapping[their]!r}" for their, target in lowered.items() if target not in LEADHUB_FIELDS
    ]:
        raise ValueError(
            f"{', '.join(wrong)}: not a field leadhub reads; map each field to one of {', '.join(LEADHUB_FIELDS)}"
        )
    return lowered


NO_VALUE = "the submission has no fields with a value: every field is missing, empty or blank"


def has_a_value(form: FormData) -> bool:
    """Whether a submission carries anything: an uploaded file, or a field whose value is not null, blank text or an
    empty (or all-blank) list or object. `false` and `0` are values. One with none would be a blank contact and lead."""
    return bool(form.files) or any(_is_a_value(value) for value in form.fields.values())


def _is_a_value(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, dict):
        return any(_is_a_value(v) for v in value.values())
    if isinstance(value, list):
        return any(_is_a_value(v) for v in value)
    return True


def unstorable_field(form: FormData) -> str | None:
    """`field 'x' holds ...` for the first field whose name or value (at any depth) holds what no stored text can
    (a NUL, a lone surrogate from JSON's `"\\ud800"`); None when every one is text."""
    for name, value in form.fields.items():
        if problem := unstorable(name) or first_unstorable(value):
            return f"field {name[:60]!r} holds {problem}; send text without it"
    return None


def mapped_name(name: str) -> str:
    """A form field's name as `fields:` and the built-in names match it: trimmed, in any case (`Phone` is `phone`)."""
    return name.strip().lower()


def decode_form(content_type: str, body: bytes) -> FormData:
    """Decode `body`; raises FormDecodeError with a message fit for a 400 response."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind.endswith("+json"):
        return _decode_json(content_type, body)
    if kind in URLENCODED_TYPES:
        return _decode_urlencoded(content_type, body)
    if kind in MULTIPART_TYPES:
        return _decode_multipart(content_type, body)
    raise UnsupportedContentType(
        f"unsupported content type {kind or '(none)'!r}; send one of {', '.join(SUPPORTED_TYPES)}"
    )


def _add(fields: dict[str, Any], name: str, value: Any) -> None:
    """Repeated names (checkboxes) become lists instead of overwriting each other."""
    if name not in fields:
        fields[name] = value
    elif isinstance(fields[name], list):
        fields[name].append(value)
    else:
        fields[name] = [fields[name], value]


def _decode_json(content_type: str, body: bytes) -> FormData:
    """JSON is read as UTF-8 whatever charset the Content-Type declares (RFC 8259: application/json has no charset;
    UTF-16 and UTF-32 are told apart by their byte order mark, `json_errors.read_in`), here and in the pipeline."""
    try:
        data = loads(body)
    except UnicodeDecodeError as exc:
        raise FormDecodeError(
            f"body is not {read_in(body)} JSON: {exc.reason} at byte {exc.start}{encoding_note(body)}"
            f"{_json_charset_hint(content_type)}"
        ) from exc
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise FormDecodeError(f"malformed JSON{encoding_note(body)}: {where}") from exc
    except ValueError as exc:
        raise FormDecodeError(f"malformed JSON: {json_error_text(exc)}") from exc
    if not isinstance(data, dict):
        raise FormDecodeError(f"JSON body must be an object of fields, not {type(data).__name__}")
    return FormData(fields=data)


def _json_charset_hint(content_type: str) -> str:
    declared = declared_charset(content_type)
    if declared is None or declared.strip().lower().replace("_", "-") in ("utf-8", "utf8"):
        return ""
    return f"; JSON is read as UTF-8 (RFC 8259), not in the declared charset {declared[:40]!r}: send it as UTF-8"


def declared_charset(content_type: str) -> str | None:
    """The `charset=` parameter of a Content-Type as written (quotes removed), or None when there is none."""
    match = _CHARSET_PARAM.search(content_type)
    return match.group(1) if match else None


def _codec(charset: str) -> str:
    """The Python codec for a declared charset; FormDecodeError when Python knows none by that name."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        info = None
    if info is None or not info._is_text_encoding or info.name.replace("-", "_") in _NOT_A_CHARSET:  # type: ignore[attr-defined]
        raise FormDecodeError(
            f"unknown charset {charset[:40]!r} in Content-Type; declare one such as utf-8 or windows-1251"
        )
    return info.name


def urlencoded_pairs(content_type: str, body: bytes, what: str = "form body") -> list[tuple[str, str]]:
    """A urlencoded body's (name, value) pairs in order, percent-escapes decoded in the charset the Content-Type
    declares (old windows-1251 pages and PHP clients send `charset=windows-1251`), else UTF-8.

    Strictly: bytes that are not valid in that charset are a FormDecodeError naming it, never U+FFFD characters
    in place of a name and a message answered 202.
    """
    declared = declared_charset(content_type)
    codec = _codec(declared) if declared else "utf-8"
    label = declared or "UTF-8"
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        raise FormDecodeError(f"{what} is not {label}: invalid byte at {exc.start}{_declare_hint(declared)}") from exc
    try:
        return parse_qsl(text, keep_blank_values=True, encoding=codec, errors="strict")
    except UnicodeDecodeError as exc:
        raise FormDecodeError(
            f"{what} holds percent-escaped bytes that are not {label}{_declare_hint(declared)}"
        ) from exc


def _declare_hint(declared: str | None) -> str:
    if declared:
        return ""
    return "; send UTF-8 or declare the charset (Content-Type: application/x-www-form-urlencoded; charset=windows-1251)"


def _decode_urlencoded(content_type: str, body: bytes) -> FormData:
    fields: dict[str, Any] = {}
    for name, value in urlencoded_pairs(content_type, body):
        _add(fields, name, value)
    return FormData(fields=fields)


def _decode_multipart(content_type: str, body: bytes) -> FormData:
    if "boundary=" not in content_type.lower():
        raise FormDecodeError("multipart/form-data without a boundary parameter")
    try:  # surrogateescape: the header's bytes that were not UTF-8 (aiohttp keeps them as surrogates) as they came
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise FormDecodeError("the Content-Type holds a character that cannot be written as a header") from exc
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    boundary = message.get_boundary()
    if boundary is not None and not boundary.isascii():
        # RFC 2046 allows ASCII only; and the queue carries such a Content-Type escaped, so the pipeline could not
        # find the parts the edge found.
        raise FormDecodeError("the multipart boundary holds a byte that is not ASCII; RFC 2046 allows ASCII only")
    if not message.is_multipart() or message.defects:
        raise FormDecodeError("malformed multipart body: parts do not match the boundary")
    form = FormData()
    for part in message.iter_parts():  # type: ignore[attr-defined]
        _add_part(form, part)
    return form


def _add_part(form: FormData, part: Message) -> None:
    disposition = part.get_param("name", header="content-disposition")
    if not disposition:
        raise FormDecodeError("multipart part without a Content-Disposition name")
    name = str(disposition)
    payload = part.get_payload(decode=True) or b""
    filename = part.get_filename()
    if filename is not None:
        form.files.append(
            UploadedFile(
                field=name,
                filename=filename,
                content_type=part.get_content_type(),
                size=len(payload),
                sha256=hashlib.sha256(payload).hexdigest(),
            )
        )
        return
    charset = part.get_content_charset() or "utf-8"
    try:
        value = payload.decode(_codec(charset))
    except UnicodeDecodeError as exc:
        raise FormDecodeError(f"field {name!r} is not valid {charset}") from exc
    _add(form.fields, name, value)
