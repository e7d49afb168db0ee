"""Code generator: randomness, patterns, the entropy guard, the check character, ids."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from statistics import NormalDist

import pytest
from coupons import codegen
from coupons.codegen import (
    ALPHABET,
    DEFAULT_PATTERN,
    PatternError,
    check_char,
    check_pattern,
    generate_code,
    new_coupon_id,
    random_bits,
    verify_check_char,
)
from hypothesis import given, settings
from hypothesis import strategies as st

CROCKFORD = "[0-9A-HJKMNP-TV-Z]"
DEFAULT_SHAPE = re.compile(rf"^{CROCKFORD}{{4}}-{CROCKFORD}{{4}}-{CROCKFORD}{{4}}$")
SAMPLE = 100_000
# floor(2**60 / 10**9): the largest campaign 12 '#' may serve under the 1e-9 guard.
MAX_CAMPAIGN_12 = 1_152_921_504


def _normalise(code: str) -> str:
    return code.replace("-", "").upper()


def _chi2_critical(df: int, p: float = 1e-6) -> float:
    """Upper p-quantile of chi-square(df), Wilson-Hilferty approximation (good to <1% here)."""
    z = NormalDist().inv_cdf(1 - p)
    h = 2 / (9 * df)
    return df * (1 - h + z * h**0.5) ** 3


def _chi2(counts: Counter[str], total: int) -> float:
    expected = total / len(ALPHABET)
    return sum((counts.get(symbol, 0) - expected) ** 2 / expected for symbol in ALPHABET)


@pytest.fixture(scope="module")
def default_codes() -> list[str]:
    return [generate_code() for _ in range(SAMPLE)]


# --- the default codes -----------------------------------------------------------------


def test_alphabet_is_crockford_base32() -> None:
    assert ALPHABET == "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    assert len(set(ALPHABET)) == 32
    assert DEFAULT_PATTERN == "####-####-####"
    assert random_bits(DEFAULT_PATTERN) == 60.0


def test_default_codes_are_distinct_and_well_formed(default_codes: list[str]) -> None:
    assert len(set(default_codes)) == SAMPLE
    malformed = [code for code in default_codes if not DEFAULT_SHAPE.fullmatch(code)]
    assert malformed == []


def test_default_codes_never_contain_i_l_o_u(default_codes: list[str]) -> None:
    seen = set("".join(default_codes))
    assert seen.isdisjoint("ILOU")
    assert seen == set(ALPHABET) | {"-"}


def test_character_distribution_is_uniform(default_codes: list[str]) -> None:
    # All 1.2M characters against uniform over 32 symbols (31 degrees of freedom)...
    symbols = "".join(_normalise(code) for code in default_codes)
    assert _chi2(Counter(symbols), len(symbols)) < _chi2_critical(31)
    # ...and each of the 12 positions on its own (12 x 31 degrees of freedom): no position is biased.
    per_position = sum(
        _chi2(Counter(code[i] for code in map(_normalise, default_codes)), SAMPLE) for i in range(12)
    )
    assert per_position < _chi2_critical(12 * 31)


def test_chi_square_detects_a_biased_source() -> None:
    # The threshold is generous, not blind: one symbol missing is far past it.
    biased = Counter({symbol: 100_000 // 31 for symbol in ALPHABET[:31]})
    assert _chi2(biased, sum(biased.values())) > _chi2_critical(31)


def test_random_characters_come_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_randbits(bits: int) -> int:
        calls.append(bits)
        return (1 << bits) - 1  # all ones: every symbol is the last one, Z

    monkeypatch.setattr(codegen.secrets, "randbits", fake_randbits)
    assert generate_code() == "ZZZZ-ZZZZ-ZZZZ"
    assert generate_code("SALE-####-####-####-##") == "SALE-ZZZZ-ZZZZ-ZZZZ-ZZ"
    assert calls == [60, 70]


def test_each_slot_takes_its_own_five_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Symbol indices 0..11 packed 5 bits apiece, first slot in the lowest bits.
    packed = sum(index << (5 * slot) for slot, index in enumerate(range(12)))
    monkeypatch.setattr(codegen.secrets, "randbits", lambda bits: packed)
    assert generate_code() == "0123-4567-89AB"


# --- patterns --------------------------------------------------------------------------


def test_pattern_keeps_its_literal_prefix() -> None:
    shape = re.compile(rf"^SALE-{CROCKFORD}{{4}}-{CROCKFORD}{{4}}-{CROCKFORD}{{4}}$")
    codes = {generate_code("SALE-####-####-####") for _ in range(1_000)}
    assert len(codes) == 1_000
    assert all(shape.fullmatch(code) for code in codes)
    assert random_bits("SALE-####-####-####") == 60.0


def test_literals_outside_the_alphabet_are_kept() -> None:
    code = generate_code("LOUI_############")
    assert code.startswith("LOUI_")
    assert re.fullmatch(rf"LOUI_{CROCKFORD}{{12}}", code)


def test_lowercase_letters_in_a_pattern_are_upper_cased() -> None:
    code = generate_code("sale-####-####-####")
    assert code.startswith("SALE-")
    assert random_bits("sale-####-####-####") == 60.0
    check_pattern("sale-####-####-####", 1_000)


def test_random_bits_counts_five_per_slot() -> None:
    assert random_bits("ABC") == 0.0
    assert random_bits("#" * 13) == 65.0
    assert random_bits("X-" + "#" * 20) == 100.0


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "####-####-####=",
        "=####-####-####",
        "+####-####-####",
        "@####-####-####",
        "####-####-####!",
        "####-####-#### ",
        "####-####-####\t",
        "####.####.####",
        "SALÉ-####-####-####",
        "\uff33\uff21\uff2c\uff25-####-####-####",  # full-width SALE
        "\uff03\uff03\uff03\uff03-####-####-####",  # full-width #
        "####-####-####\u200b",
        "#" * 65,
        "SALE-" + "#" * 60,
    ],
)
def test_invalid_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        random_bits(pattern)
    with pytest.raises(PatternError):
        check_pattern(pattern, 1)
    with pytest.raises(PatternError):
        generate_code(pattern)


def test_a_non_string_pattern_is_refused() -> None:
    with pytest.raises(PatternError):
        random_bits(None)  # type: ignore[arg-type]


def test_pattern_length_limits_count_the_check_character() -> None:
    assert len(generate_code("#" * 64)) == 64
    check_pattern("#" * 64, 1)
    check_pattern("#" * 63, 1, with_check_char=True)
    assert len(generate_code("#" * 63, with_check_char=True)) == 64
    with pytest.raises(PatternError):
        check_pattern("#" * 64, 1, with_check_char=True)
    # With dashes the check character comes after one more dash.
    dashed = "#" * 31 + "-" + "#" * 31  # 63 characters
    check_pattern(dashed, 1)
    with pytest.raises(PatternError):
        check_pattern(dashed, 1, with_check_char=True)
    with pytest.raises(PatternError):
        generate_code(dashed, with_check_char=True)


def test_the_error_message_explains_the_rule() -> None:
    with pytest.raises(PatternError, match="'#'"):
        check_pattern("SALE-####", 1)
    with pytest.raises(PatternError, match="may contain only"):
        check_pattern("=" + DEFAULT_PATTERN, 1)
    with pytest.raises(PatternError, match="3 to 64"):
        check_pattern("#" * 65, 1)


# --- the entropy guard -----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 10, 1_000_000])
def test_eight_random_characters_are_refused_for_any_size(size: int) -> None:
    with pytest.raises(PatternError, match="at least 12"):
        check_pattern("SALE-####-####", size)


def test_fewer_than_sixty_bits_are_refused_even_when_the_ratio_passes() -> None:
    # 32**11 / 1 code would pass the 1e-9 ratio; the contract's 60-bit floor still refuses it.
    assert 32**11 >= 10**9
    with pytest.raises(PatternError):
        check_pattern("#" * 11, 1)
    with pytest.raises(PatternError):
        generate_code("#" * 11)


def test_default_pattern_accepted_for_a_million_codes() -> None:
    check_pattern(DEFAULT_PATTERN, 1_000_000)
    check_pattern(DEFAULT_PATTERN, 1_000_000, with_check_char=True)
    check_pattern("SALE-####-####-####", 1_000_000)


def test_guard_refuses_exactly_past_one_in_a_billion() -> None:
    # 12 '#': 32**12 = 2**60 strings; N / 2**60 <= 1e-9 holds up to N = 1,152,921,504.
    assert MAX_CAMPAIGN_12 * 10**9 <= 32**12 < (MAX_CAMPAIGN_12 + 1) * 10**9
    check_pattern(DEFAULT_PATTERN, MAX_CAMPAIGN_12)
    with pytest.raises(PatternError, match="too guessable"):
        check_pattern(DEFAULT_PATTERN, MAX_CAMPAIGN_12 + 1)
    with pytest.raises(PatternError, match="13"):
        check_pattern(DEFAULT_PATTERN, 2 * MAX_CAMPAIGN_12)
    check_pattern("####-####-####-##", MAX_CAMPAIGN_12 + 1)
    check_pattern("####-####-####-##", 10**12)


def test_the_check_character_adds_no_entropy() -> None:
    with pytest.raises(PatternError):
        check_pattern(DEFAULT_PATTERN, MAX_CAMPAIGN_12 + 1, with_check_char=True)


@settings(max_examples=300, deadline=None)
@given(slots=st.integers(min_value=12, max_value=24), size=st.integers(min_value=1, max_value=10**30))
def test_guard_matches_the_formula(slots: int, size: int) -> None:
    pattern = "#" * slots
    if size * 10**9 > 32**slots:  # size / 32**slots > 1e-9, in exact arithmetic
        with pytest.raises(PatternError):
            check_pattern(pattern, size)
    else:
        check_pattern(pattern, size)


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "10"])
def test_campaign_size_must_be_a_positive_integer(size: object) -> None:
    with pytest.raises(ValueError, match="campaign_size"):
        check_pattern(DEFAULT_PATTERN, size)  # type: ignore[arg-type]


# --- the check character ---------------------------------------------------------------


def _substitutions(code: str, alphabet: str = ALPHABET) -> list[str]:
    return [
        code[:i] + other + code[i + 1 :]
        for i, symbol in enumerate(code)
        for other in alphabet
        if other != symbol
    ]


def _transpositions(code: str) -> list[str]:
    return [
        code[:i] + code[i + 1] + code[i] + code[i + 2 :]
        for i in range(len(code) - 1)
        if code[i] != code[i + 1]
    ]


def test_generated_check_character_verifies() -> None:
    for _ in range(200):
        code = generate_code(with_check_char=True)
        assert re.fullmatch(rf"{CROCKFORD}{{4}}-{CROCKFORD}{{4}}-{CROCKFORD}{{4}}-{CROCKFORD}", code)
        assert verify_check_char(_normalise(code))
        assert code[-1] == check_char(_normalise(code)[:-1])


def test_check_character_without_dashes_is_appended_directly() -> None:
    code = generate_code("#" * 12, with_check_char=True)
    assert re.fullmatch(rf"{CROCKFORD}{{13}}", code)
    assert verify_check_char(code)


def test_check_character_over_a_literal_prefix() -> None:
    code = generate_code("SALE_####-####-####", with_check_char=True)
    assert code.startswith("SALE_")
    normalised = _normalise(code)
    assert verify_check_char(normalised)
    # Only the documented look-alike of the literal '_' (0) and 'L' (1) slip through.
    slipped = {typo for typo in _substitutions(normalised) if verify_check_char(typo)}
    assert slipped == {"SA1E" + normalised[4:], "SALE0" + normalised[5:]}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=24))
def test_check_character_catches_every_substitution_and_adjacent_transposition(body: str) -> None:
    code = body + check_char(body)
    assert verify_check_char(code)
    assert [typo for typo in _substitutions(code) if verify_check_char(typo)] == []
    assert [typo for typo in _transpositions(code) if verify_check_char(typo)] == []


def test_check_character_exhaustive_over_every_weight_and_symbol_pair() -> None:
    # Position weights repeat every 31 symbols, so a 32-symbol body exercises every weight,
    # and each adjacent pair is tried with every ordered pair of distinct symbols.
    base = "".join(ALPHABET[(7 * i + 3) % 32] for i in range(32))
    code = base + check_char(base)
    assert [typo for typo in _substitutions(code) if verify_check_char(typo)] == []
    for i in range(len(base) - 1):
        for u in ALPHABET:
            for v in ALPHABET:
                if u == v:
                    continue
                body = base[:i] + u + v + base[i + 2 :]
                full = body + check_char(body)
                assert verify_check_char(full)
                assert not verify_check_char(full[:i] + v + u + full[i + 2 :]), (i, u, v)
    # The last body symbol swapped with the check character.
    for u in ALPHABET:
        body = base[:-1] + u
        full = body + check_char(body)
        assert full[-1] == full[-2] or not verify_check_char(full[:-2] + full[-1] + full[-2]), u


LOOKALIKES = [set("IL1"), set("O0_"), set("UV")]


def _same_class(a: str, b: str) -> bool:
    return any(a in group and b in group for group in LOOKALIKES)


@settings(max_examples=100, deadline=None)
@given(
    prefix=st.text(alphabet="ILOU_ABC", min_size=1, max_size=8),
    body=st.text(alphabet=ALPHABET, min_size=1, max_size=12),
)
def test_literals_outside_the_alphabet_only_hide_their_lookalikes(prefix: str, body: str) -> None:
    data = prefix + body
    code = data + check_char(data)
    extended = ALPHABET + "ILOU_"
    for i, symbol in enumerate(code):
        for other in extended:
            if other == symbol or (i == len(code) - 1 and other not in ALPHABET):
                continue
            typo = code[:i] + other + code[i + 1 :]
            assert verify_check_char(typo) == _same_class(symbol, other), (code, i, other)


@pytest.mark.parametrize("code", ["", "0", "ABCD-EFGH", "abcd0", "ABC D", "ABCI", "ABC_", "ABCÉ"])
def test_verify_rejects_what_cannot_carry_a_check_character(code: str) -> None:
    assert verify_check_char(code) is False


@pytest.mark.parametrize(("check", "lookalikes"), [("1", "IL"), ("0", "O_"), ("V", "U")])
def test_the_check_character_itself_must_be_an_alphabet_symbol(check: str, lookalikes: str) -> None:
    # Inside the code I/L/O/U/_ read as their look-alikes; as the check character they are refused.
    body = next(b for b in (generate_code() for _ in range(10_000)) if check_char(_normalise(b)) == check)
    code = _normalise(body) + check
    assert verify_check_char(code)
    for other in lookalikes:
        assert not verify_check_char(code[:-1] + other)


def test_verify_rejects_a_non_string() -> None:
    assert verify_check_char(None) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["", "abc", "AB-CD", "ABÉ"])
def test_check_char_refuses_a_non_normalised_code(code: str) -> None:
    with pytest.raises(ValueError):
        check_char(code)


# --- ids -------------------------------------------------------------------------------


def test_uuid_ids() -> None:
    ids = {new_coupon_id("uuid") for _ in range(1_000)}
    assert len(ids) == 1_000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert str(parsed) == value


def test_alphanumeric_ids() -> None:
    ids = {new_coupon_id("alphanumeric") for _ in range(1_000)}
    assert len(ids) == 1_000
    assert all(re.fullmatch(r"[0-9a-z]{20}", value) for value in ids)
    assert set("".join(ids)) == set("0123456789abcdefghijklmnopqrstuvwxyz")


@pytest.mark.parametrize("id_format", ["", "UUID", "hex", "alnum", "uuid4"])
def test_unknown_id_format_is_refused(id_format: str) -> None:
    with pytest.raises(ValueError, match="coupon_id_format"):
        new_coupon_id(id_format)
