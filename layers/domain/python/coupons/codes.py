"""Coupon code normalisation: what makes `summer-25` and `SUMMER25` the same code."""

from __future__ import annotations

import re
import unicodedata

# What an admin may type as a vanity code (the contract: 3 to 64 of A-Z 0-9 - _).
VANITY_CODE = re.compile(r"^[A-Za-z0-9_-]{3,64}$")
# What a normalised code looks like: dashes and spaces are gone, letters upper-case.
NORMALISED = re.compile(r"^[A-Z0-9_]{1,64}$")
MAX_LOOKUP_LENGTH = 200


def normalise(code: str) -> str | None:
    """The canonical form used for the blind index, or None when the input cannot be a code.

    Case is folded and spaces and dashes are dropped. Compatibility forms
    (full-width letters from a phone keyboard) fold to ASCII; anything that is
    still not ASCII after that (homoglyphs, zero-width tricks) is not a code.
    """
    if not isinstance(code, str) or not code or len(code) > MAX_LOOKUP_LENGTH:
        return None
    folded = unicodedata.normalize("NFKC", code)
    if not folded.isascii():
        return None
    compact = re.sub(r"[\s-]+", "", folded).upper()
    return compact if NORMALISED.fullmatch(compact) else None


def display_form(code: str) -> str:
    """How a vanity code is shown back: upper-case, as typed otherwise."""
    return code.strip().upper()
