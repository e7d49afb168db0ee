"""The plaintext-code audit every local stack gets when it stops (tests/conftest.py, issue 17): it must
find a code in any of its spellings, and must not cry wolf over random ids, hashes and ciphertexts."""

from __future__ import annotations

import json
import secrets

from conftest import codes_in, csv_codes, normalised_code, plaintext_hits, served_logs  # type: ignore[import-not-found]
from hypothesis import given
from hypothesis import strategies as st


def test_a_code_is_found_however_it_is_written() -> None:
    codes = {"summer-25-vip"}
    for text in ('{"error": "unknown column \\"summer-25-vip\\""}', "SUMMER25VIP", "Summer 25 VIP",
                 "CODE#SUMMER-25-VIP#x"):
        assert plaintext_hits(codes, [("t", text)]), text
    assert plaintext_hits(codes, [("t", "summer-26-vip SUMMER25VI")]) == []


def test_codes_too_short_to_tell_from_random_text_are_not_looked_for() -> None:
    assert normalised_code("SAVE5") is None and normalised_code("POS-ONLY") is None  # 5 and 7 characters
    assert normalised_code("DEADBEEF12") is None  # hex only: 12 characters at least
    assert normalised_code("DEADBEEF1234") == "DEADBEEF1234"
    assert normalised_code("WELCOME10") == "WELCOME10"
    assert normalised_code('=HYPERLINK("x")') is None  # not something a coupon could hold


@given(st.lists(st.uuids().map(str), min_size=50, max_size=50))
def test_random_ids_and_ciphertexts_do_not_match_test_codes(ids: list[str]) -> None:
    noise = json.dumps({"ids": ids, "ct": [secrets.token_urlsafe(96) for _ in range(50)],
                        "hashes": [secrets.token_hex(32) for _ in range(50)]})
    codes = {f"T{secrets.token_hex(6).upper()}" for _ in range(50)}  # what `unique()` makes
    assert plaintext_hits(codes, [("noise", noise)]) == []


def test_codes_are_read_from_bodies_answers_and_csv_uploads() -> None:
    assert codes_in({"code": "A1", "codes": ["B2", "C3"], "items": [{"code": "D4"}, {"id": "x"}]}) == [
        "A1", "B2", "C3", "D4"]
    assert csv_codes("\ufeffCode,discount_value\r\nSPRING-10,5\r\n,5\r\n".encode()) == ["SPRING-10"]
    assert csv_codes(b"summer-25-vip,PERCENT,10\r\n") == []  # no header naming `code`: record by hand


def test_the_serve_banner_is_not_a_log_but_what_follows_is() -> None:
    output = ["starting\n", "ready: http://x\n", '  -d \'{"code": "welcome10"}\'\n', "Stop with Ctrl-C.\n",
              '{"level": "WARNING", "message": "WELCOME10"}\n']
    logs = served_logs(output)
    assert "welcome10" not in logs and "starting" in logs
    assert plaintext_hits({"WELCOME10"}, [("logs", logs)])


def test_the_error_envelopes_code_is_not_a_coupon_code() -> None:
    # A 503's {"error": {"code": "TRY_AGAIN"}} is logged as a warning by design: not a code to look for.
    assert codes_in({"error": {"code": "TRY_AGAIN", "message": "…"}}) == []
    assert codes_in({"error": "x", "items": [{"code": "SUMMER-2026"}]}) == ["SUMMER-2026"]
