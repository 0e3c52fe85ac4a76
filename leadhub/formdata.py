"""Decode a web-form body (JSON, urlencoded, multipart) into fields, the same way at the edge and in the pipeline."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl

from leadhub.json_errors import json_error_text

JSON_TYPES = ("application/json",)
URLENCODED_TYPES = ("application/x-www-form-urlencoded",)
MULTIPART_TYPES = ("multipart/form-data",)
SUPPORTED_TYPES = JSON_TYPES + URLENCODED_TYPES + MULTIPART_TYPES
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
    such a value would only be kept on the inquiry, and the contact would get no name or phone from it."""
    lowered = {their: target.strip().lower() for their, target in mapping.items()}
    if wrong := [
        f"{their!r} -> {mapping[their]!r}" for their, target in lowered.items() if target not in LEADHUB_FIELDS
    ]:
        raise ValueError(
            f"{', '.join(wrong)}: not a field leadhub reads; map each field to one of {', '.join(LEADHUB_FIELDS)}"
        )
    return lowered


def decode_form(content_type: str, body: bytes) -> FormData:
    """Decode `body`; raises FormDecodeError with a message fit for a 400 response."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind.endswith("+json"):
        return _decode_json(body)
    if kind in URLENCODED_TYPES:
        return _decode_urlencoded(body)
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


def _decode_json(body: bytes) -> FormData:
    try:
        data = json.loads(body)
    except UnicodeDecodeError as exc:
        raise FormDecodeError(f"body is not UTF-8 JSON: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise FormDecodeError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:
        raise FormDecodeError(f"malformed JSON: {json_error_text(exc)}") from exc
    except RecursionError:
        raise FormDecodeError("JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise FormDecodeError(f"JSON body must be an object of fields, not {type(data).__name__}")
    return FormData(fields=data)


def _decode_text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormDecodeError(f"{what} is not UTF-8: invalid byte at {exc.start}") from exc


def _decode_urlencoded(body: bytes) -> FormData:
    text = _decode_text(body, "form body")
    fields: dict[str, Any] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        _add(fields, name, value)
    return FormData(fields=fields)


def _decode_multipart(content_type: str, body: bytes) -> FormData:
    if "boundary=" not in content_type.lower():
        raise FormDecodeError("multipart/form-data without a boundary parameter")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
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
        value = payload.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise FormDecodeError(f"field {name!r} is not valid {charset}") from exc
    _add(form.fields, name, value)
