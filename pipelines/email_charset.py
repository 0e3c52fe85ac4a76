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
# Microsoft's ISO-2022-JP (CP50220): JIS X 0208 plus the NEC row-13 signs (①, №, ㈱) Python's codecs refuse.
ISO2022JP_MS = "x-iso-2022-jp-ms"
# Codecs a mislabelled text is usually really in, tried when the labelled one fails.
_SIBLINGS: dict[str, tuple[str, ...]] = {
    "iso2022_jp_ext": (ISO2022JP_MS, "cp932", "euc_jp"),
    "iso2022_jp": (ISO2022JP_MS, "cp932", "euc_jp"),
    "cp932": ("euc_jp", "iso2022_jp_ext"),
    "shift_jis": ("cp932", "euc_jp"),
    "euc_jp": ("cp932",),
    "big5": ("big5hkscs", "gb18030"),
    "gb18030": ("big5",),
    "cp949": ("euc_kr",),
    "ascii": ("utf-8",),
}
_MULTIBYTE = frozenset(
    ("utf-8", "gb18030", "big5", "big5hkscs", "cp932", "euc_jp", "iso2022_jp_ext", "iso2022_jp", "cp949", "utf-7")
)
_CYRILLIC_8BIT = ("cp1251", "koi8_r", "iso8859_5", "cp866", "mac_cyrillic", "koi8_u")
_LATIN = frozenset(("cp1252", "latin_1", "iso8859_15", "iso8859_2", "cp1250"))


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


def guess_order(labels: list[str | None]) -> tuple[str, ...]:
    """Codecs to try on unlabelled 8-bit text, from the labels a message declares elsewhere: multi-byte
    codecs first, since they fail loudly on the wrong bytes while single-byte ones never fail."""
    found = list(dict.fromkeys(c for c in map(codec_for, labels) if c))
    found += [s for c in found for s in _SIBLINGS.get(c, ()) if s not in found]
    return tuple(sorted(found, key=lambda c: c not in _MULTIBYTE))


def decode_bytes(data: bytes, label: str | None = None, guesses: tuple[str, ...] = ()) -> str:
    """Text from bytes: the labelled codec if it fits, its usual stand-ins, UTF-8, the message's other
    codecs, and at last the label (or cp1252) with replacement characters."""
    codec = codec_for(label)
    if codec is None and data.isascii():
        return data.decode("ascii")
    candidates = [codec, *_SIBLINGS.get(codec or "", ()), "utf-8", *guesses] if codec else ["utf-8", *guesses]
    for candidate in dict.fromkeys(candidates):
        try:
            text = _iso2022jp_ms(data) if candidate == ISO2022JP_MS else data.decode(candidate)
        except (UnicodeError, LookupError, ValueError):  # utf-7 raises more than UnicodeDecodeError on garbage
            continue
        return _recheck_cyrillic(data, text, candidate)
    if codec == "utf-8" and not _mostly_utf8(data):
        codec = None  # 8-bit text under a UTF-8 label (cp1251 is the usual one): read it as single-byte text
    if codec in (None, "cp1252"):
        text = data.decode(FALLBACK, errors="replace") if codec else data.decode("latin_1")
        return _recheck_cyrillic(data, text, FALLBACK)
    try:
        return data.decode(codec, errors="replace")
    except (UnicodeError, LookupError, ValueError):
        return data.decode(FALLBACK, errors="replace")


_ASCII_BYTES = bytes(range(128))


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with a stray byte or two, not single-byte text: in cp1251 or latin-1 text nearly every 8-bit byte
    is an invalid UTF-8 sequence of its own, in UTF-8 text only the stray ones are."""
    invalid = data.decode("utf-8", errors="replace").count("\ufffd")
    return invalid * 2 <= len(data.translate(None, _ASCII_BYTES))


def _iso2022jp_ms(data: bytes) -> str:
    """ISO-2022-JP read through EUC: the JIS rows shifted to EUC bytes and decoded as EUC-JIS-2004, whose
    row 13 holds the NEC signs at the same code points. 8-bit input is not ISO-2022-JP (often Shift-JIS)."""
    if not data.isascii():
        raise ValueError("8-bit bytes in ISO-2022-JP")
    out = bytearray()
    mode, i = "ascii", 0
    while i < len(data):
        if data[i] == 0x1B and data[i + 1 : i + 3] in _ISO2022_MODES:
            mode = _ISO2022_MODES[data[i + 1 : i + 3]]
            i += 3
            continue
        byte = data[i]
        if mode == "jis" and 0x21 <= byte <= 0x7E and i + 1 < len(data) and 0x21 <= data[i + 1] <= 0x7E:
            out += bytes((byte | 0x80, data[i + 1] | 0x80))
            i += 2
            continue
        out += bytes((0x8E, byte | 0x80)) if mode == "kana" and 0x21 <= byte <= 0x5F else bytes((byte,))
        i += 1
    return out.decode("euc_jis_2004")


_ISO2022_MODES = {b"$B": "jis", b"$@": "jis", b"(B": "ascii", b"(J": "ascii", b"(I": "kana"}


def _recheck_cyrillic(data: bytes, text: str, codec: str) -> str:
    """Russian text under the wrong single-byte label (koi8-r as windows-1251, cp1251 as latin-1) reads as
    upper-case soup or accented-Latin soup; the Cyrillic codec giving the most lower-case letters wins."""
    if codec not in _CYRILLIC_8BIT and not (codec in _LATIN and _latin_soup(text)):
        return text
    best, best_score = text, _cyrillic_score(text) if codec in _CYRILLIC_8BIT else 0
    for other in _CYRILLIC_8BIT:
        if other == codec:
            continue
        try:
            candidate = data.decode(other)
        except UnicodeError:
            continue
        score = _cyrillic_score(candidate)
        if score > best_score * 1.5 + 5:
            best, best_score = candidate, score
    return best


def _cyrillic_score(text: str) -> int:
    return sum(1 for ch in text if "\u0430" <= ch <= "\u044f" or ch == "\u0451")  # Cyrillic lower case


_SOUP = re.compile(r"[\u00c0-\u00ff]{4,}")
_ACCENTED = re.compile(r"[\u00c0-\u00ff]")


def _latin_soup(text: str) -> bool:
    """Mostly words made only of accented Latin letters: 8-bit Cyrillic read as Latin-1."""
    accented = len(_ACCENTED.findall(text))
    return accented >= 8 and sum(len(m) for m in _SOUP.findall(text)) > accented * 0.6


# An RFC 2047 encoded-word, leniently: optional RFC 2231 language, spaces not allowed in the text.
_WORD = re.compile(r"=\?([^?\s]+?)\?([bBqQ])\?([^?]*?)\?=")
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # never meaningful in a header; NUL breaks PostgreSQL
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=_\s-]")
_BETWEEN_WORDS = re.compile(r"^[ \t\r\n]*$")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    if encoding in "bB":
        if _NOT_BASE64.search(text):
            return None
        cleaned = re.sub(r"[^A-Za-z0-9+/=_-]", "", text).replace("-", "+").replace("_", "/").rstrip("=")
        cleaned += "=" * (-len(cleaned) % 4)
        try:
            return base64.b64decode(cleaned)
        except (binascii.Error, ValueError):
            return None
    return quopri.decodestring(text.replace("_", " ").encode("latin-1", "replace"), header=False)


def decode_header_value(value: str | None, guesses: tuple[str, ...] = ()) -> str:
    """A header as text: encoded-words decoded (adjacent words of one charset joined first), raw 8-bit
    bytes (carried as surrogate escapes by the parser) decoded as UTF-8 or one of `guesses`, whitespace unfolded."""
    if not value:
        return ""
    value = raw_8bit(value, guesses)
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
    text = re.sub(r"\r?\n[ \t]*", " ", "".join(out))
    return _CONTROLS.sub("", text.replace("\r", "").replace("\n", " "))


def _flush(pending: list[tuple[str | None, bytes]], out: list[str]) -> None:
    out.extend(decode_bytes(data, charset) for charset, data in pending)
    pending.clear()


def raw_8bit(value: str, guesses: tuple[str, ...] = ()) -> str:
    """Undo the parser's surrogate escapes of raw 8-bit header bytes, decoding them as UTF-8 or a guess."""
    if not any("\udc80" <= ch <= "\udcff" for ch in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None, guesses)
