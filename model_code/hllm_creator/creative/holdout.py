"""The evaluation hold-out: a stable, hash-based share of users the teacher never writes training
rows for. Their last click (the test target of the leave-last-out split) is never seen by the
teacher or by training, so personalization is measured on them (``hllm-creator personalization``).
"""

from __future__ import annotations

import hashlib

HELDOUT_SHARE = 0.1
SALT = "hllm-heldout-v1"


def is_heldout(user_id: str, share: float = HELDOUT_SHARE, salt: str = SALT) -> bool:
    """True for a stable ``share`` of user ids (sha256 of salt + id), independent of the dataset order."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"hold-out share must be in [0, 1], got {share}")
    h = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64 < share
