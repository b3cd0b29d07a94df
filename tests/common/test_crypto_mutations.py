"""The key ring says what is missing (issue 16, mutation testing)."""

from __future__ import annotations

import pytest

from calltrail_common.crypto import KeyRing
from calltrail_common.settings import SettingsError


def test_a_key_ring_without_a_key_says_which_setting_is_missing() -> None:
    with pytest.raises(SettingsError, match=r"^ENCRYPTION_KEY is required here and is not set$"):
        KeyRing("")
