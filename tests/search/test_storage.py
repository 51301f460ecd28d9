"""Opening a study storage (mpq.search.storage): errors name the URL with its password masked."""
from __future__ import annotations

import pytest

from mpq.search import StorageUnreachable, mask_url, open_storage


def test_an_unreachable_storage_names_the_url_with_the_password_masked():
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/mpq"
    with pytest.raises(StorageUnreachable) as e:
        open_storage(url)
    assert "postgresql://alice:***@127.0.0.1:1/mpq" in str(e.value)
    assert "s3cret-pw" not in str(e.value)
    assert mask_url(url) == "postgresql://alice:***@127.0.0.1:1/mpq"
    with pytest.raises(StorageUnreachable, match="not a URL"):
        open_storage("search.db")
