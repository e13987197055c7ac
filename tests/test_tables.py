"""Tables round-trip through local paths, file:// and a real S3 API, and fail loudly."""

from __future__ import annotations

import io
import re

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ede.data.tables import Table, read_table, write_table


@pytest.fixture(params=["local", "file", "s3"])
def base(request: pytest.FixtureRequest, tmp_path) -> str:
    """A writable URL prefix in each kind of storage."""
    if request.param == "local":
        return str(tmp_path)
    if request.param == "file":
        return tmp_path.as_uri()
    return request.getfixturevalue("s3_bucket")


def _put(url: str, data: bytes) -> None:
    with fsspec.open(url, "wb") as f:
        f.write(data)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _listing(url_prefix: str) -> list[str]:
    fs, path = fsspec.core.url_to_fs(url_prefix)
    fs.invalidate_cache()
    return [p.rsplit("/", 1)[-1] for p in fs.find(path)]


def _example(n: int = 20, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.arange(n) % 5 == 0).astype(np.int64)
    return X, y


def test_parquet_round_trip(base: str) -> None:
    X, y = _example()
    url = f"{base}/sub/data.parquet"
    write_table(Table(X=X, y=y, feature_names=["a", "b", "c"], source="mem"), url)
    table = read_table(url)
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert table.X.dtype == np.float32 and table.y.dtype == np.int64
    assert table.feature_names == ["a", "b", "c"]
    assert table.source == url
    with fsspec.open(url, "rb") as f:  # ede.data.parquet_encoding: no dictionary on floats
        group = pq.ParquetFile(f).metadata.row_group(0)
        encoded = [group.column(j).has_dictionary_page for j in range(group.num_columns)]
    assert encoded == [False, False, False, True]  # a, b, c, label


def test_csv_round_trip(base: str) -> None:
    X, y = _example()
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y)
    url = f"{base}/data.csv"
    _put(url, _csv(frame))
    table = read_table(url)
    np.testing.assert_allclose(table.X, X, rtol=1e-6)
    np.testing.assert_array_equal(table.y, y)
    assert table.feature_names == ["a", "b", "c"]


def test_npz_round_trip(base: str) -> None:
    X, y = _example(d=4)
    url = f"{base}/data.npz"
    _put(url, _npz(X=X.astype(np.float64), y=y))
    table = read_table(url)
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(table.y, y)
    assert table.feature_names == ["f0", "f1", "f2", "f3"]


def test_a_missing_label_column_is_an_error_unless_the_data_are_said_unlabelled(base: str):
    """A renamed label (`target`) must not become a feature, nor leave every row
    "unlabelled", without a word: the label column is a contract, `None` opts out."""
    X, y = _example()
    _put(f"{base}/x.npz", _npz(X=X))
    _put(f"{base}/x.csv", _csv(pd.DataFrame(X, columns=["a", "b", "c"]).assign(target=y)))
    for name, column in (("x.npz", "'y'"), ("x.csv", "'label'")):
        with pytest.raises(ValueError, match=f"x.*: no label column {column}.*--no-label"):
            read_table(f"{base}/{name}")
    assert read_table(f"{base}/x.npz", label_column=None).y is None
    unlabelled = read_table(f"{base}/x.csv", label_column=None)
    assert unlabelled.y is None and unlabelled.feature_names == ["a", "b", "c", "target"]
    labelled = read_table(f"{base}/x.csv", label_column="target")
    np.testing.assert_array_equal(labelled.y, y)


def test_label_column_and_feature_selection(tmp_path) -> None:
    X, y = _example()
    url = str(tmp_path / "t.parquet")
    write_table(pd.DataFrame(X, columns=["a", "b", "c"]).assign(target=y), url)
    table = read_table(url, label_column="target", feature_columns=["c", "a"])
    np.testing.assert_array_equal(table.X, X[:, [2, 0]])
    np.testing.assert_array_equal(table.y, y)
    assert table.feature_names == ["c", "a"]
    unlabelled = read_table(url, label_column=None, feature_columns=["b"])
    assert unlabelled.y is None and unlabelled.X.shape == (20, 1)


def _bad_cases() -> list[tuple[str, bytes, str]]:
    good = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "label": [0, 1, 0, 0]})
    return [
        ("data.txt", b"a,label\n1,0\n", "unknown table format"),
        ("text.csv", _csv(good.assign(colour=["r", "g", "b", "r"])), "'colour' is not numeric"),
        ("nan.csv", _csv(good.assign(a=[np.nan, 1.0, np.nan, 2.0])), "'a' has 2 NaN/inf"),
        (
            "inf.npz",
            _npz(X=np.array([[1.0, np.inf], [0.0, 1.0]]), y=np.array([0, 1])),
            "'f1' has 1 NaN/inf",
        ),
        ("labels.csv", _csv(good.assign(label=[0, 2, 1, 5])), r"outside \{0, 1\}: \[2, 5\]"),
        (
            "text-labels.csv",
            _csv(good.assign(label=["no", "yes", "no", "no"])),
            r"label column 'label' holds text \['no', 'yes'\], not 0/1 labels",
        ),
        ("empty.csv", b"a,label\n", r"empty \(0 rows\)"),
        ("noX.npz", _npz(Z=np.zeros((2, 2))), "no array 'X'"),
    ]


@pytest.mark.parametrize("name,data,message", _bad_cases(), ids=lambda v: str(v)[:12])
def test_bad_input_names_file_and_fault(base: str, name: str, data: bytes, message: str) -> None:
    url = f"{base}/{name}"
    _put(url, data)
    with pytest.raises(ValueError, match=f"{re.escape(url)}.*{message}"):
        read_table(url)


def test_missing_requested_feature_column(base: str) -> None:
    url = f"{base}/d.csv"
    _put(url, _csv(pd.DataFrame({"a": [1.0], "b": [2.0]})))
    with pytest.raises(ValueError, match=f"{re.escape(url)}.*missing.*'zz'"):
        read_table(url, label_column=None, feature_columns=["a", "zz"])


def test_missing_file_names_url(base: str) -> None:
    url = f"{base}/nowhere.parquet"
    with pytest.raises(FileNotFoundError, match=re.escape(url)):
        read_table(url)


def test_atomic_write_leaves_only_final_key(base: str) -> None:
    X, y = _example()
    url = f"{base}/out/model_input.parquet"
    write_table(pd.DataFrame(X, columns=["a", "b", "c"]).assign(label=y), url)
    write_table(pd.DataFrame(X[:5], columns=["a", "b", "c"]), url)  # overwrite in place
    assert _listing(f"{base}/out") == ["model_input.parquet"]
    assert read_table(url, label_column=None).X.shape == (5, 3)


def test_failed_move_leaves_nothing(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{base}/out/t.parquet"
    fs, _ = fsspec.core.url_to_fs(url)

    def broken_mv(self, *args, **kwargs):
        raise OSError("simulated crash during commit")

    monkeypatch.setattr(type(fs), "mv", broken_mv)
    with pytest.raises(OSError, match="simulated crash"):
        write_table(pd.DataFrame({"a": [1.0, 2.0]}), url)
    assert "t.parquet" not in _listing(base)
    assert not any(".tmp-" in name for name in _listing(base))


def test_unserialisable_frame_writes_nothing(base: str) -> None:
    url = f"{base}/bad.parquet"
    with pytest.raises((TypeError, ValueError)):
        write_table(pd.DataFrame({"a": [1, "x", 2.5]}), url)
    assert _listing(base) == []


def test_write_requires_parquet_suffix(tmp_path) -> None:
    with pytest.raises(ValueError, match="out.csv"):
        write_table(pd.DataFrame({"a": [1.0]}), str(tmp_path / "out.csv"))
