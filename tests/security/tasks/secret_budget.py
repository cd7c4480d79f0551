"""A task that registers more secret text than a try may (``test_secret_masking.py``).

It tries 20 ``mask_secret`` calls of 900 KB each, then fills the try's budget with 64 KiB
secrets and prints them, then goes one secret past the budget, and sets a 900 KB variable
with a sensitive name. What each call answered is written to ``$BUDGET_OUT`` as JSON.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable

from sdk import Variable, mask_secret
from sdk.errors import RequestFailed


def _answer(call: Callable[[], None]) -> dict[str, str]:
    try:
        call()
    except RequestFailed as exc:
        return {"code": exc.code.value, "message": str(exc.detail.get("message"))}
    return {"code": "OK", "message": ""}


def floods_the_masker() -> None:
    report: dict[str, object] = {}
    report["huge"] = [
        _answer(lambda i=i: mask_secret(f"huge-{i:02d}-" + "h" * 900_000)) for i in range(20)
    ]
    kept = [secrets.token_hex(32 * 1024) for _ in range(4)]  # 4 x 64 KiB: the whole budget
    report["kept"] = [_answer(lambda s=s: mask_secret(s)) for s in kept]
    report["one_too_many"] = _answer(lambda: mask_secret("one-secret-too-many"))
    report["variable"] = _answer(lambda: Variable.set("flood_password", "p" * 900_000))
    for i, secret in enumerate(kept):
        print(f"kept {i}: {secret} end", flush=True)
    report["kept_secrets"] = kept
    with open(os.environ["BUDGET_OUT"], "w") as out:
        json.dump(report, out)
