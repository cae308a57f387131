"""sentinel.tensors: typed specs, per-batch padding, and the binary form rows are stored in."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.tensors import Signature, TensorSpec, cast, collate, decode_row, encode_row, row_length

TEXT = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("attention_mask", "int64", (None,))))


def test_collate_pads_dynamic_dims_to_the_longest_row_of_the_batch():
    rows = [{"input_ids": np.array([101, 7, 102]), "attention_mask": np.ones(3, dtype=np.int64)},
            {"input_ids": np.array([101, 102]), "attention_mask": np.ones(2, dtype=np.int64)}]
    batch = collate(rows, TEXT.with_pads({"input_ids": 0}))
    assert batch["input_ids"].dtype == np.int64 and batch["input_ids"].shape == (2, 3)
    assert batch["input_ids"][1].tolist() == [101, 102, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 0]
    assert [row_length(r, TEXT) for r in rows] == [3, 2]


def test_collate_keeps_fixed_inputs_and_dtypes():
    sig = Signature((TensorSpec("pixels", "float32", (1, 8, 8)),))
    batch = collate([{"pixels": np.zeros((1, 8, 8))}] * 3, sig)
    assert batch["pixels"].shape == (3, 1, 8, 8) and batch["pixels"].dtype == np.float32
    assert collate([], sig)["pixels"].shape == (0, 1, 8, 8)
    assert sig.is_single and sig.input_shape == (1, 8, 8) and not TEXT.is_single


@pytest.mark.parametrize("row", [
    {"x": np.arange(30, dtype=np.float32)},
    {"input_ids": np.arange(256, dtype=np.int64), "attention_mask": np.ones(256, dtype=np.int64)},
    {"pixels": np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)},
    {"flags": np.array([True, False]), "h": np.ones((2, 2), dtype=np.float16), "i": np.array([-3], dtype=np.int32)},
])
def test_rows_round_trip_typed_and_compact(row):
    data = encode_row(row)
    back = decode_row(data)
    assert list(back) == list(row)
    for k in row:
        assert back[k].dtype == row[k].dtype and back[k].shape == row[k].shape
        assert np.array_equal(back[k], row[k])
    raw = sum(v.nbytes for v in row.values())
    assert len(data) == raw + 4 + sum(3 + len(k) + 4 * v.ndim for k, v in row.items())


@pytest.mark.parametrize("bad", [b"", b"XX1\x00", encode_row({"x": np.arange(4.0)})[:-3],
                                 encode_row({"x": np.arange(4.0)}) + b"\x00"])
def test_decode_refuses_what_encode_did_not_write(bad):
    with pytest.raises(ValueError):
        decode_row(bad)


def test_cast_refuses_fractions_and_out_of_range_for_integer_inputs():
    spec = TensorSpec("input_ids", "int64", (None,))
    assert cast(np.array([1.0, 2.0]), spec).dtype == np.int64
    with pytest.raises(ValueError, match="whole numbers"):
        cast(np.array([1.5]), spec)
    with pytest.raises(ValueError, match="lie in"):
        cast(np.array([1e30]), TensorSpec("i", "int32", (None,)))
    with pytest.raises(ValueError, match="range of float16"):
        cast(np.array([1e6]), TensorSpec("h", "float16", (1,)))


def test_differences_name_what_differs():
    other = Signature((TensorSpec("input_ids", "int32", (None,)), TensorSpec("token_type_ids", "int64", (None,))))
    diff = TEXT.differences(other)
    assert any("attention_mask" in d and "first model only" in d for d in diff)
    assert any("token_type_ids" in d and "second model only" in d for d in diff)
    assert any("int64 in the first model, int32" in d for d in diff)
    assert TEXT.differences(TEXT) == []


def test_decode_rows_in_bulk_gives_what_decode_row_gives_row_by_row():
    from sentinel.tensors import decode_row, decode_rows, encode_row
    rng = np.random.default_rng(3)
    rows = [{"features": rng.normal(size=30).astype(np.float32)} for _ in range(40)]
    rows += [{"input_ids": rng.integers(0, 9, size=k).astype(np.int64), "attention_mask": np.ones(k, np.int64)}
             for k in (3, 5, 5, 7)]
    rows += [{"feature5": rng.normal(size=30).astype(np.float32)} for _ in range(9)]   # same length, other name
    rows += [{"features": rng.normal(size=30).astype(np.float64)[:15]} for _ in range(10)]
    blobs = [encode_row(r) for r in rows]
    order = rng.permutation(len(blobs))
    got = decode_rows([blobs[i] for i in order])
    for g, i in zip(got, order):
        want = decode_row(blobs[i])
        assert list(g) == list(want)
        for k in want:
            assert g[k].dtype == want[k].dtype and g[k].shape == want[k].shape and np.array_equal(g[k], want[k])
    with pytest.raises(ValueError, match="bad magic"):
        decode_rows([blobs[0]] * 10 + [b"XX" + blobs[0][2:]] + [blobs[0]] * 10)


def test_rows_held_by_column_batch_and_adopt_as_collate_and_adopt_do_row_by_row():
    from sentinel.tensors import Rows, adopt, collate, encode_row
    rng = np.random.default_rng(4)
    sig = Signature((TensorSpec("features", "float32", (30,)),))
    rows = [{"features": rng.normal(size=30).astype(np.float32)} for _ in range(30)]
    rows.insert(7, {"features": rng.normal(size=30)})   # float64: another length, decoded alone, adopt casts it
    first, second = Rows(), Rows()
    first.extend([encode_row(r) for r in rows[:20]])
    second.extend([encode_row(r) for r in rows[20:]])
    first.join(second)
    assert len(first) == len(rows) and list(first.loose) == [7]
    assert all(np.array_equal(first[i]["features"], r["features"]) for i, r in enumerate(rows))
    held = first.adopted(sig)
    assert isinstance(held, Rows) and held.batch(sig) is not None
    got = collate(held, sig)["features"]
    want = collate([adopt(r, sig) for r in rows], sig)["features"]
    assert got.dtype == want.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, want)
    short = Rows()
    short.extend([encode_row(r) for r in rows[8:]] + [encode_row({"features": np.zeros(29, np.float32)})])
    assert short.batch(sig) is None    # a row that does not fit: collate goes row by row, and refuses it
    with pytest.raises(ValueError):
        collate(short, sig)
    old = Rows()
    legacy = [{"input": rng.normal(size=30).astype(np.float32)} for _ in range(12)]
    old.extend([encode_row(r) for r in legacy])
    adopted = old.adopted(sig)       # a legacy row becomes the model's input, as adopt makes it
    assert isinstance(adopted, list) and [list(r) for r in adopted] == [["features"]] * len(legacy)
    np.testing.assert_array_equal(collate(adopted, sig)["features"], np.stack([r["input"] for r in legacy]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["float32", ">f4", "float64", "int64", "int32", "bool", "uint8", "float16"]),
       st.lists(st.integers(0, 4), min_size=1, max_size=3), st.booleans())
def test_a_batch_encoded_at_once_is_each_row_encoded(dtype, shape, strided):
    """``encode_rows`` (the batch decoder's stored form of a batch's inputs) gives each row the
    bytes ``encode_row`` gives it alone, whatever the dtype, byte order, shape and layout."""
    from sentinel.tensors import encode_row, encode_rows

    rows = (np.random.default_rng(0).normal(size=shape) * 50).astype(dtype)
    if strided and rows.ndim > 1:
        rows = rows[:, ::-1]
    assert encode_rows("x", rows) == [encode_row({"x": r}) for r in rows]
