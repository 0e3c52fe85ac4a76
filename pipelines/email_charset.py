"""Tolerant text decoding for real-world mail: wrong or unknown charset labels and broken encoded-words."""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re

# Labels seen in the wild that name no codec, or name the wrong one; None = guess from the bytes.
_ALIASES: dict[str, str | None] = {
    "unknown-8bit": None,
    "x-unknown": None,
    "unknown": None,
    "x-user-defined": None,
    "8bit": None,
    "default": None,
    "charset": None,
    "none": None,
    "us-ascii": None,  # mislabelled 8-bit text is common; pure ASCII decodes the same either way
    "ascii": None,
    "ansi_x3.4-1968": None,
    "unicode-1-1-utf-7": "utf-7",
    "x-unicode-2-0-utf-7": "utf-7",
    "iso-gb2312": "gb18030",
    "gb2312": "gb18030",  # a superset: mail labelled gb2312 often holds GBK/GB18030 characters
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "iso-2022-jp": "iso2022_jp_ext",  # accepts the JIS X 0201 katakana that Japanese mailers send
    "shift-jis": "cp932",
    "shift_jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "latin1": "cp1252",
    "iso-8859-1": "cp1252",  # what Windows mailers really send under this label (smart quotes in 0x80-0x9f)
    "x-mac-cyrillic": "mac-cyrillic",
    "koi8-ru": "koi8-u",
    "utf8": "utf-8",
    "utf-8-sig": "utf-8-sig",
}

FALLBACK = "cp1252"


def codec_for(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when the label is absent, unknown or meaningless."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if name in _ALIASES:
        return _ALIASES[name]
    if name.startswith(("windows-", "win-")) and name.split("-", 1)[1].isdigit():
        name = "cp" + name.split("-", 1)[1]
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """Text from bytes: the labelled codec if it fits, else UTF-8, else cp1252 with replacements."""
    codec = codec_for(label)
    candidates = [c for c in (codec, "utf-8") if c]
    for candidate in candidates:
        try:
            return data.decode(candidate)
        except (UnicodeError, LookupError, ValueError):  # utf-7 raises more than UnicodeDecodeError on garbage
            continue
    try:
        return data.decode(codec or FALLBACK, errors="replace")
    except Exception:  # a codec that fails even with errors="replace"
        return data.decode(FALLBACK, errors="replace")


# An RFC 2047 encoded-word, leniently: optional RFC 2231 language, spaces not allowed in the text.
_WORD = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?([^?]*?)\?=")
_BETWEEN_WORDS = re.compile(r"^[ \t\r\n]*$")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    if encoding in "bB":
        cleaned = re.sub(r"[^A-Za-z0-9+/=_-]", "", text).replace("-", "+").replace("_", "/").rstrip("=")
        cleaned += "=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return None
    return quopri.decodestring(text.replace("_", " ").encode("latin-1", "replace"), header=False)


def decode_header_value(value: str | None, fallback: str | None = None) -> str:
    """A header as text: encoded-words decoded (adjacent words of one charset joined first), raw 8-bit
    bytes (carried as surrogate escapes by the parser) decoded as UTF-8 or `fallback`, whitespace unfolded."""
    if not value:
        return ""
    value = _raw_8bit(value, fallback)
    out: list[str] = []
    pending: list[tuple[str | None, bytes]] = []  # consecutive words, decoded together per charset
    pos = 0
    for match in _WORD.finditer(value):
        gap = value[pos : match.start()]
        if gap and not (pending and _BETWEEN_WORDS.match(gap)):
            _flush(pending, out)
            out.append(gap)
        charset = match.group(1).split("*", 1)[0]
        data = _word_bytes(match.group(2), match.group(3))
        if data is None:
            _flush(pending, out)
            out.append(match.group(0))
        elif pending and pending[-1][0] == charset.lower():
            pending[-1] = (pending[-1][0], pending[-1][1] + data)
        else:
            pending.append((charset.lower(), data))
        pos = match.end()
    _flush(pending, out)
    out.append(value[pos:])
    return re.sub(r"\r?\n[ \t]*", " ", "".join(out)).replace("\r", "").replace("\n", " ")


def _flush(pending: list[tuple[str | None, bytes]], out: list[str]) -> None:
    for charset, data in pending:
        out.append(decode_bytes(data, charset))
    pending.clear()


def _raw_8bit(value: str, fallback: str | None) -> str:
    """Undo the parser's surrogate escapes of raw 8-bit header bytes, decoding them as UTF-8 or `fallback`."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    data = value.encode("utf-8", "surrogateescape")
    return decode_bytes(data, fallback)
