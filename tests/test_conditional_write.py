"""Compare-and-swap on local disk and on a real S3 API (moto's server): a stale view loses."""

from __future__ import annotations

import os
import threading
import time

import pytest

from ede.conditional_write import LOCK_STALE_S, Conflict, read_versioned, write_if


@pytest.fixture(params=["local", "s3"])
def url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "pointer")
    return f"{request.getfixturevalue('s3_bucket')}/models/pointer"


def test_create_then_replace_only_from_the_current_version(url):
    assert read_versioned(url) == read_versioned(url)  # absent, stably
    assert read_versioned(url).data is None
    write_if(url, b"one", None)
    with pytest.raises(Conflict):
        write_if(url, b"other", None)  # it exists now: create-only refuses
    first = read_versioned(url)
    assert first.data == b"one"
    write_if(url, b"two", first.token)
    with pytest.raises(Conflict):
        write_if(url, b"three", first.token)  # a stale view loses
    assert read_versioned(url).data == b"two"


def test_racing_writers_on_one_view_have_one_winner(tmp_path):
    url = str(tmp_path / "pointer")
    write_if(url, b"start", None)
    seen = read_versioned(url)
    winners: list[int] = []

    def race(i: int) -> None:
        try:
            write_if(url, str(i).encode(), seen.token)
            winners.append(i)
        except Conflict:
            pass

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert read_versioned(url).data == str(winners[0]).encode()
    assert not os.path.exists(f"{url}.lock")


def test_a_crashed_holders_lock_is_broken_once_stale(tmp_path):
    url = str(tmp_path / "pointer")
    lock = f"{url}.lock"
    open(lock, "w").close()
    old = time.time() - LOCK_STALE_S - 1
    os.utime(lock, (old, old))
    write_if(url, b"after a crash", None)
    assert read_versioned(url).data == b"after a crash"


def test_never_creates_a_bucket(s3_server):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_if("s3://ede-no-such-bucket/pointer", b"x", None)
