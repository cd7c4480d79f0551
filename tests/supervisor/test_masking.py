"""supervisor.masking: secrets replaced by *** everywhere, thread-safely."""

from __future__ import annotations

import threading

import pytest

from supervisor.masking import MASK, MIN_SECRET_LENGTH, Masker, is_sensitive_key


def masker_with(*secrets: object) -> Masker:
    masker = Masker()
    for secret in secrets:
        masker.add(secret)
    return masker


def test_registered_secret_is_replaced_everywhere_in_text():
    masker = masker_with("hunter22")
    assert masker.mask("pw=hunter22, again hunter22.") == "pw=***, again ***."


def test_secret_of_minimum_length_is_masked_and_shorter_is_not():
    assert MIN_SECRET_LENGTH == 5
    masker = masker_with("abcde", "wxyz")
    assert masker.mask("abcde wxyz") == "*** wxyz"
    assert len(masker) == 1


def test_text_without_secrets_is_returned_unchanged():
    assert Masker().mask("nothing to hide") == "nothing to hide"
    assert masker_with("secret-1").mask("nothing to hide") == "nothing to hide"


def test_longest_secret_wins_when_one_contains_another():
    masker = masker_with("abcde", "abcdefghij")
    assert masker.mask("x abcdefghij y") == "x *** y"
    masker = masker_with("abcdefghij", "abcde")  # registration order does not matter
    assert masker.mask("x abcdefghij y abcde") == "x *** y ***"


def test_regex_metacharacters_in_secrets_are_literal():
    masker = masker_with("a.b*c(d)")
    assert masker.mask("a.b*c(d) aXbbc(d)") == "*** aXbbc(d)"


def test_every_string_inside_nested_values_is_registered():
    masker = masker_with(
        {"user": "alice-the-admin", "keys": ["key-number-1", {"deep": "deep-secret"}]}
    )
    for secret in ("alice-the-admin", "key-number-1", "deep-secret"):
        assert masker.mask(f"<{secret}>") == "<***>"


def test_numbers_are_registered_as_their_text_and_booleans_and_none_are_ignored():
    masker = masker_with(1234567, True, None, 3.14159)
    assert masker.mask("pin 1234567 pi 3.14159") == "pin *** pi ***"
    assert len(masker) == 2


def test_mask_value_masks_strings_in_nested_values_and_keys_without_mutating():
    masker = masker_with("s3cr3t")
    value = {"a": "x s3cr3t", "s3cr3t": [1, "s3cr3t", ("s3cr3t",)], "n": 5}
    masked = masker.mask_value(value)
    assert masked == {"a": f"x {MASK}", MASK: [1, MASK, [MASK]], "n": 5}
    assert value["a"] == "x s3cr3t"


def test_adding_a_secret_after_masking_takes_effect():
    masker = masker_with("first-secret")
    assert masker.mask("second-secret") == "second-secret"
    masker.add("second-secret")
    assert masker.mask("first-secret second-secret") == "*** ***"


def test_secrets_added_while_other_threads_mask_are_all_masked_afterwards():
    masker = masker_with("initial-secret")
    stop = threading.Event()
    errors: list[BaseException] = []

    def mask_continuously():
        try:
            while not stop.is_set():
                assert "initial-secret" not in masker.mask("x initial-secret y")
        except BaseException as exc:
            errors.append(exc)

    maskers = [threading.Thread(target=mask_continuously) for _ in range(3)]
    for t in maskers:
        t.start()

    def add_many(offset):
        for i in range(300):
            masker.add(f"secret-{offset}-{i:04d}")

    adders = [threading.Thread(target=add_many, args=(n,)) for n in range(3)]
    for t in adders:
        t.start()
    for t in adders:
        t.join()
    stop.set()
    for t in maskers:
        t.join()
    assert not errors
    assert len(masker) == 1 + 900
    text = " ".join(f"secret-{n}-{i:04d}" for n in range(3) for i in range(300))
    assert set(masker.mask(text).split()) == {MASK}


def test_a_token_is_masked_whole_and_its_signature_alone():
    masker = Masker()
    masker.add_token("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJlLXBhcnQ")
    assert masker.mask("Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJlLXBhcnQ") == f"Bearer {MASK}"
    assert masker.mask("sig=c2lnbmF0dXJlLXBhcnQ") == f"sig={MASK}"
    assert masker.mask("header eyJhbGciOi") == "header eyJhbGciOi"  # not secret by itself


def test_hostile_deep_nesting_does_not_recurse_without_bound():
    value: object = "deep-secret-value"
    for _ in range(5000):
        value = [value]
    masker = Masker()
    masker.add(value)  # must not raise RecursionError
    assert len(masker) == 0


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "DB_PASSWORD",
        "api_key",
        "MyApiKey",
        "aws_secret_access_key",
        "auth_token",
        "private_key_pem",
        "service_account_json",
        "credentials",
        "Authorization",
    ],
)
def test_sensitive_key_names(name):
    assert is_sensitive_key(name)


@pytest.mark.parametrize("name", ["host", "user_name", "bucket", "region", "keyword", ""])
def test_ordinary_key_names_are_not_sensitive(name):
    assert not is_sensitive_key(name)
