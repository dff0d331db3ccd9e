"""Language tags: what manifests say (BCP 47, RFC 5646) and what MP4 stores (ISO 639-2/T).

Sources say ``eng``, ``fre`` or ``en``; requests say ``en`` or ``pt-BR``. HLS ``LANGUAGE`` and
DASH ``@lang`` take BCP 47, which uses the shortest ISO 639 code (``en``, not ``eng``); an MP4
track's ``mdhd`` takes three letters. Every comparison and every manifest goes through here.
"""

from __future__ import annotations

import re

# ISO 639-1 -> ISO 639-2/T for the languages a catalogue commonly carries.
_TWO_TO_THREE = {
    "ar": "ara", "bg": "bul", "bn": "ben", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan",
    "de": "deu", "el": "ell", "en": "eng", "es": "spa", "et": "est", "eu": "eus", "fa": "fas",
    "fi": "fin", "fr": "fra", "ga": "gle", "gl": "glg", "he": "heb", "hi": "hin", "hr": "hrv",
    "hu": "hun", "hy": "hye", "id": "ind", "is": "isl", "it": "ita", "ja": "jpn", "ka": "kat",
    "ko": "kor", "lt": "lit", "lv": "lav", "mk": "mkd", "ms": "msa", "nb": "nob", "nl": "nld",
    "nn": "nno", "no": "nor", "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus", "sk": "slk",
    "sl": "slv", "sq": "sqi", "sr": "srp", "sv": "swe", "ta": "tam", "te": "tel", "th": "tha",
    "tl": "tgl", "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "zho",
}  # fmt: skip
# ISO 639-2/B (bibliographic) spellings still common in files -> 639-2/T.
_B_TO_T = {
    "alb": "sqi", "arm": "hye", "baq": "eus", "chi": "zho", "cze": "ces", "dut": "nld",
    "fre": "fra", "geo": "kat", "ger": "deu", "gre": "ell", "ice": "isl", "mac": "mkd",
    "may": "msa", "per": "fas", "rum": "ron", "slo": "slk", "wel": "cym",
}  # fmt: skip
_THREE_TO_TWO = {three: two for two, three in _TWO_TO_THREE.items()}
_TAG = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*")
UNDETERMINED = "und"


def bcp47(tag: str | None) -> str:
    """The canonical BCP 47 form (``eng``, ``en``, ``EN`` -> ``en``; ``fre`` -> ``fr``;
    ``pt-br`` -> ``pt-BR``); ``und`` for none or anything that is not a language tag (so a
    file's odd metadata can never reach a file name or a playlist)."""
    if not tag:
        return UNDETERMINED
    parts = tag.strip().replace("_", "-").lower()
    if not _TAG.fullmatch(parts):
        return UNDETERMINED
    primary, *rest = parts.split("-")
    primary = _B_TO_T.get(primary, primary)
    primary = _THREE_TO_TWO.get(primary, primary)
    subtags = [s.upper() if len(s) == 2 else s for s in rest]
    return "-".join([primary, *subtags])


def iso639_2(tag: str | None) -> str:
    """The three letters an MP4 track stores (ISO 639-2/T); ``und`` where there are none."""
    primary = bcp47(tag).split("-")[0]
    code = _TWO_TO_THREE.get(primary, primary)
    return code if len(code) == 3 else UNDETERMINED
