"""Coupon code and id generation: random source, patterns, check character, entropy guard.

Random source
    Every random character comes from :mod:`secrets` (the OS CSPRNG): a code
    with k random characters takes one ``secrets.randbits(5 * k)`` and spends
    5 bits per character, each an index drawn uniformly and independently into
    Crockford's base32 alphabet ``ALPHABET`` (digits and upper-case letters
    without I, L, O, U: nothing to misread, nothing rude). One character
    carries log2(32) = 5 bits.

Patterns
    A pattern is a template for a code: each ``#`` becomes one random character,
    every other character is kept as a literal. Literals may be ``A-Z 0-9 - _``
    (lower-case ASCII letters are accepted and upper-cased, since codes are
    case-insensitive). The default ``####-####-####`` shows 12 random characters
    (60 bits) as ``XXXX-XXXX-XXXX``; ``SALE-####-####-####`` keeps the prefix.
    A generated code, check character included, must be a valid vanity code:
    3 to 64 characters of ``A-Z 0-9 - _``, so at most 64 once normalised too.

Entropy guard (:func:`check_pattern`)
    With ``k`` the number of ``#`` in the pattern and ``N`` the number of codes in
    the campaign, all codes share the pattern's literals, so an attacker who knows
    them guesses only the random part: one guess is one of 32**k equally likely
    strings, of which N are live codes. The chance that a single guess hits some
    code of the campaign is therefore

        P(hit) = N / 32**k

    and a pattern is refused when P(hit) > 1e-9, i.e. it is accepted only when

        32**k >= N * 10**9            (evaluated exactly, in integers)

    Independently of the campaign's size, a pattern is also refused when it has
    fewer than 12 ``#`` (60 bits): the contract requires every generated code to
    carry at least 60 bits from a cryptographic source. With 12 ``#`` the first
    rule allows up to floor(2**60 / 10**9) = 1,152,921,504 codes; above that it
    asks for more ``#``.

    The check character adds no entropy: it is a public function of the other
    characters, so an attacker computes it. It only lets the service reject a
    mistyped code before any lookup; it is never counted in ``k``.

Check character (:func:`check_char`, :func:`verify_check_char`)
    The 32 alphabet symbols are read as the elements of the finite field GF(32)
    = GF(2)[x] / (x**5 + x**2 + 1), the symbol's index in ``ALPHABET`` being the
    element's bit pattern. For a normalised code v_1 .. v_n the check symbol c is
    chosen so that

        S = a**n * v_1 + a**(n-1) * v_2 + ... + a * v_n + c = 0      (in GF(32))

    with a = x (the element ``2``). It is computed by Horner's rule, which needs
    only multiplication by x (shift left, reduce by 0b100101). Every position j
    (counted from the end) has the weight w_j = a**j, and

    * every single-symbol substitution v -> v' (v != v'), the check symbol
      included, changes S by w_j * (v + v'), a product of two non-zero field
      elements, hence non-zero: the code no longer verifies;
    * every transposition of two adjacent distinct symbols u v -> v u changes S by
      (w_{j+1} + w_j) * (u + v) = a**j * (a + 1) * (u + v), non-zero because
      a != 1 and u != v (this covers the last symbol swapped with the check one);
    * for the same reason (a**2 != 1, as a has order 31) it also catches every
      jump transposition u w v -> v w u and every twin error u u -> v v.

    Characters outside the alphabet can only come from a pattern's literals. They
    take the value Crockford's decoding gives their look-alike: I and L read as
    1, O as 0, U as V; the underscore reads as 0. Substitutions among such
    look-alikes (I/L/1, O/0/_, U/V) are the only ones the check cannot see; they
    are all in the constant literal part, and such a code still fails the lookup.

Ids
    :func:`new_coupon_id` follows the ``coupon_id_format`` option: ``uuid`` gives a
    random (version 4) UUID, ``alphanumeric`` 20 characters of ``0-9a-z`` drawn
    with :mod:`secrets` (20 * log2(36) ~ 103 bits).
"""

from __future__ import annotations

import math
import re
import secrets
import uuid

__all__ = [
    "ALPHABET",
    "DEFAULT_PATTERN",
    "MAX_GUESS_PROBABILITY",
    "MIN_RANDOM_CHARS",
    "PatternError",
    "check_char",
    "check_pattern",
    "generate_code",
    "new_coupon_id",
    "random_bits",
    "verify_check_char",
]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DEFAULT_PATTERN = "####-####-####"
RANDOM_SLOT = "#"
BITS_PER_CHAR = math.log2(len(ALPHABET))  # 5.0
# The contract's floor: at least 60 bits per generated code, i.e. 12 random characters.
MIN_RANDOM_CHARS = 12
# The entropy guard refuses a pattern when one guess has a better chance than this.
MAX_GUESS_PROBABILITY = 1e-9
_GUESS_ODDS = 10**9  # 1 / MAX_GUESS_PROBABILITY, as an integer for exact comparison

MIN_CODE_LENGTH = 3
MAX_CODE_LENGTH = 64
_PATTERN_CHARS = re.compile(r"^[A-Za-z0-9_#-]+$")

ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 20

# GF(32) = GF(2)[x] / (x^5 + x^2 + 1); multiplying by x is a shift and a reduction.
_FIELD_BITS = 5
_FIELD_POLY = 0b100101
_VALUES: dict[str, int] = {symbol: index for index, symbol in enumerate(ALPHABET)}
# Literal characters outside the alphabet read as their Crockford look-alike.
_VALUES.update({"I": _VALUES["1"], "L": _VALUES["1"], "O": _VALUES["0"], "U": _VALUES["V"], "_": 0})


class PatternError(ValueError):
    """A code pattern that is malformed or too guessable; the message says why."""


def _xtime(value: int) -> int:
    """Multiply a GF(32) element by x."""
    value <<= 1
    if value >> _FIELD_BITS:
        value ^= _FIELD_POLY
    return value


def _syndrome(normalised: str) -> int:
    """Horner evaluation of the weighted sum S over GF(32) (see the module docstring)."""
    acc = 0
    for symbol in normalised:
        acc = _xtime(acc) ^ _VALUES[symbol]
    return acc


def _normalise(code: str) -> str:
    return code.replace("-", "").upper()


def _parse(pattern: str, *, with_check_char: bool) -> str:
    """The upper-cased pattern, or PatternError when it cannot produce a valid code."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("pattern must be a non-empty string")
    if not pattern.isascii() or not _PATTERN_CHARS.fullmatch(pattern):
        raise PatternError("pattern may contain only '#' (one random character), A-Z, 0-9, '-' and '_'")
    upper = pattern.upper()
    # The code as shown (check character and its dash included). Normalising only drops dashes,
    # so a code within 64 characters here is within 64 once normalised too.
    length = len(upper) + (_check_suffix_length(upper) if with_check_char else 0)
    if not MIN_CODE_LENGTH <= length <= MAX_CODE_LENGTH:
        extra = " including the check character" if with_check_char else ""
        raise PatternError(
            f"pattern must produce a code of {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH} characters{extra};"
            f" this one produces {length}"
        )
    return upper


def _check_suffix_length(pattern: str) -> int:
    return 2 if "-" in pattern else 1


def _require_min_bits(pattern: str) -> int:
    slots = pattern.count(RANDOM_SLOT)
    if slots < MIN_RANDOM_CHARS:
        raise PatternError(
            f"pattern has {slots} random characters ({slots * BITS_PER_CHAR:g} bits); generated codes"
            f" need at least {MIN_RANDOM_CHARS} '#' ({MIN_RANDOM_CHARS * BITS_PER_CHAR:g} bits)"
        )
    return slots


def random_bits(pattern: str) -> float:
    """Bits of randomness in a code made from ``pattern``: 5 per ``#``, 0 per literal.

    Raises PatternError when the pattern is malformed (bad characters, length).
    """
    return _parse(pattern, with_check_char=False).count(RANDOM_SLOT) * BITS_PER_CHAR


def check_pattern(pattern: str, campaign_size: int, *, with_check_char: bool = False) -> None:
    """The entropy guard: refuse a pattern too guessable for a campaign of ``campaign_size`` codes.

    Refused (PatternError) when the pattern is malformed, when it has fewer than
    12 ``#`` (60 bits), or when campaign_size / 32**k > 1e-9 (k = number of
    ``#``), i.e. unless 32**k >= campaign_size * 10**9. The check character, if
    any, only counts towards the length limit, never towards the entropy.
    """
    if isinstance(campaign_size, bool) or not isinstance(campaign_size, int) or campaign_size < 1:
        raise ValueError("campaign_size must be a positive integer")
    upper = _parse(pattern, with_check_char=with_check_char)
    slots = _require_min_bits(upper)
    space = len(ALPHABET) ** slots
    if campaign_size * _GUESS_ODDS > space:
        needed = slots
        while len(ALPHABET) ** needed < campaign_size * _GUESS_ODDS:
            needed += 1
        raise PatternError(
            f"pattern is too guessable for {campaign_size} codes: one guess would hit a code with"
            f" probability {campaign_size}/32^{slots} = {campaign_size / space:.3g},"
            f" more than {MAX_GUESS_PROBABILITY:g}; use at least {needed} '#'"
        )


def check_char(normalised_code: str) -> str:
    """The check character for a normalised code (upper-case ``A-Z 0-9 _``, no dashes)."""
    if not normalised_code or any(symbol not in _VALUES for symbol in normalised_code):
        raise ValueError("check_char needs a non-empty normalised code (A-Z, 0-9, _)")
    return ALPHABET[_xtime(_syndrome(normalised_code))]


def verify_check_char(normalised_code: str) -> bool:
    """True iff the last character of a normalised code is the right check character."""
    if not isinstance(normalised_code, str) or len(normalised_code) < 2:
        return False
    if normalised_code[-1] not in ALPHABET or any(symbol not in _VALUES for symbol in normalised_code):
        return False
    return _syndrome(normalised_code) == 0


def generate_code(pattern: str = DEFAULT_PATTERN, *, with_check_char: bool = False) -> str:
    """A new code from ``pattern``: each ``#`` replaced by a random Crockford character.

    With ``with_check_char`` one check character is appended (after a ``-`` when
    the pattern has dashes), computed over the normalised code. Raises
    PatternError for a malformed pattern or one with fewer than 60 random bits;
    the campaign-size guard is :func:`check_pattern`.
    """
    upper = _parse(pattern, with_check_char=with_check_char)
    slots = _require_min_bits(upper)
    # One draw of 5 bits per '#' from the OS CSPRNG, cut into 5-bit symbols: each is uniform
    # over the 32 symbols and independent of the others (what secrets.choice(ALPHABET) per
    # slot would give, in one call instead of one per character).
    pool = secrets.randbits(_FIELD_BITS * slots)
    chars: list[str] = []
    for symbol in upper:
        if symbol == RANDOM_SLOT:
            chars.append(ALPHABET[pool & 0b11111])
            pool >>= _FIELD_BITS
        else:
            chars.append(symbol)
    code = "".join(chars)
    if with_check_char:
        separator = "-" if "-" in upper else ""
        code = f"{code}{separator}{check_char(_normalise(code))}"
    return code


def new_coupon_id(id_format: str) -> str:
    """A new coupon id in the configured ``coupon_id_format``: ``uuid`` or ``alphanumeric``."""
    if id_format == "uuid":
        return str(uuid.uuid4())
    if id_format == "alphanumeric":
        return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
    raise ValueError(f"unknown coupon_id_format {id_format!r}; expected 'uuid' or 'alphanumeric'")
