"""supervisor.masking: secrets replaced by *** everywhere, thread-safely."""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor import masking
from supervisor.masking import (
    MASK,
    MAX_TASK_SECRET_BYTES,
    MAX_TASK_SECRETS,
    MAX_TASK_SECRETS_BYTES,
    MIN_SECRET_LENGTH,
    Masker,
    is_sensitive_key,
)


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


def leftmost_longest(secrets: set[str], text: str) -> str:
    """The masking rule, written plainly: at each position, the longest secret starting there."""
    out, i = [], 0
    while i < len(text):
        found = [s for s in secrets if text.startswith(s, i)]
        if found:
            out.append(MASK)
            i += max(map(len, found))
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def test_many_secrets_are_masked_leftmost_longest():
    rng = random.Random(12)
    secrets = {"".join(rng.choices("abc", k=rng.randint(5, 9))) for _ in range(3000)}
    secrets |= {s + "tail" for s in list(secrets)[:500]}  # secrets containing others
    masker = masker_with(list(secrets))
    for _ in range(10):
        text = "".join(rng.choices("abct ", k=300))
        assert masker.mask(text) == leftmost_longest(secrets, text)


def test_a_hundred_thousand_secrets_are_all_masked():
    secrets = [f"secret-{i:06d}" for i in range(100_000)]
    masker = masker_with(secrets)
    assert len(masker) == 100_000
    text = " ".join(secrets[::997])
    assert set(masker.mask(text).split()) == {MASK}


@given(
    secrets=st.lists(st.text("ab", min_size=5, max_size=9), min_size=1, max_size=12),
    text=st.text("abx", max_size=60),
)
def test_secrets_registered_at_once_follow_the_rule(secrets: list[str], text: str) -> None:
    assert masker_with(secrets).mask(text) == leftmost_longest(set(secrets), text)


@given(
    secrets=st.lists(st.text("ab", min_size=5, max_size=9), min_size=1, max_size=12),
    text=st.text("abx", max_size=60),
)
def test_secrets_registered_one_by_one_leave_no_secret_unmasked(
    secrets: list[str], text: str
) -> None:
    # Each registration builds its own small matcher here (normally small ones merge at once),
    # so spans found by different matchers are merged; no secret survives between the masks.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(masking, "_SMALL_LEVEL", 0)
        masker = masker_with(*secrets)
    for kept in masker.mask(text).split(MASK):
        assert not any(secret in kept for secret in secrets), kept
    for secret in secrets:  # a secret alone, or one containing it, is masked whole
        assert masker.mask(f"x{secret}x") == f"x{MASK}x"


def test_secrets_registered_one_by_one_are_matched_by_few_matchers():
    masker = masker_with(*(f"secret-number-{i:05d}" for i in range(5000)))
    assert masker.mask("secret-number-00000 secret-number-04999") == f"{MASK} {MASK}"
    matcher = masker._matcher
    assert matcher is not None
    assert len(matcher.levels) <= 8  # each at least 4 times the next: log4 of the secrets


def test_safe_cut_never_splits_a_secret():
    secret = "abcdefghij"
    masker = masker_with(secret, "x" * 5000)  # a long secret: the cut keeps its length back
    masker.add("zzzzz")
    text = "y" * 6000 + secret + "y" * 4990
    cut = masker.safe_cut(text)
    assert cut == 6000
    assert masker.mask(text[:cut]) + masker.mask(text[cut:]) == masker.mask(text)


def test_text_with_lone_surrogates_is_masked_and_keeps_them():
    masker = masker_with("hunter22", "sur\udcffrogate")
    assert masker.mask("path /tmp/\udcff hunter22") == "path /tmp/\udcff ***"
    assert masker.mask("a sur\udcffrogate") == "a ***"


def test_task_secrets_within_the_limits_are_registered():
    masker = Masker()
    assert masker.add_task_secret({"key": "k" * MAX_TASK_SECRET_BYTES, "n": 12345}) is None
    assert masker.mask("k" * MAX_TASK_SECRET_BYTES) == MASK
    assert masker.mask("12345") == MASK


def test_a_task_secret_longer_than_the_limit_is_refused_whole():
    masker = Masker()
    too_long = "é" * (MAX_TASK_SECRET_BYTES // 2 + 1)  # counted in UTF-8 bytes
    refused = masker.add_task_secret(["fine-secret", too_long])
    assert refused == (
        f"a secret may be at most {MAX_TASK_SECRET_BYTES} bytes (MAX_TASK_SECRET_BYTES); "
        f"this one has {MAX_TASK_SECRET_BYTES + 2}"
    )
    assert len(masker) == 0
    assert masker.mask("fine-secret") == "fine-secret"


def test_task_secrets_past_the_total_are_refused_and_known_ones_cost_nothing():
    masker = Masker()
    chunk = MAX_TASK_SECRET_BYTES
    for i in range(MAX_TASK_SECRETS_BYTES // chunk):
        assert masker.add_task_secret(str(i) * chunk) is None
    refused = masker.add_task_secret("one-more")
    assert refused is not None
    assert f"at most {MAX_TASK_SECRETS_BYTES} bytes of secrets per try" in refused
    assert masker.mask("one-more") == "one-more"
    assert masker.add_task_secret("0" * chunk) is None  # registered already: free
    assert masker.add_task_secret("tiny") is None  # too short to mask: free
    masker.add("the-supervisors-own")  # not the task's: not counted, not capped
    assert masker.add_task_secret("the-supervisors-own") is None
    assert masker.mask("the-supervisors-own") == MASK


def test_more_task_secrets_than_the_limit_are_refused():
    masker = Masker()
    refused = masker.add_task_secret([f"s-{i:05d}" for i in range(MAX_TASK_SECRETS + 1)])
    assert refused == (
        f"a task may register at most {MAX_TASK_SECRETS} secrets per try (MAX_TASK_SECRETS); "
        f"it has 0 and this adds {MAX_TASK_SECRETS + 1}"
    )
    assert len(masker) == 0
    assert masker.add_task_secret([f"s-{i:05d}" for i in range(MAX_TASK_SECRETS)]) is None
    assert masker.add_task_secret("s-one-more") is not None
    assert len(masker) == MAX_TASK_SECRETS


def test_secrets_the_supervisor_registers_are_not_capped():
    masker = Masker()
    masker.add("p" * (4 * MAX_TASK_SECRETS_BYTES))
    assert masker.mask("x" + "p" * (4 * MAX_TASK_SECRETS_BYTES)) == f"x{MASK}"
