"""Checks on a text pair (int64 token ids of variable length, raw texts, a real word-level
tokenizer): data_drift on descriptors of the texts and their tokens, never a test per token
position; robustness by token dropout, neighbour swaps and character typos, never Gaussian noise
on ids; the modality a pair's inputs get."""
from dataclasses import replace

import numpy as np
import pytest

from sentinel.checks.base import ReferenceData, RunData, build_check
from sentinel.checks.data import modality_of
from sentinel.checks.drift import drift_columns
from sentinel.checks.perturb import TokenEdit, typos
from sentinel.config import CheckSpec
from sentinel.tensors import Signature, TensorSpec

from typed import SPECIAL, TEXT_SIG, TextNet, encode_texts, messages, text_predict, text_stats

CLASSES = ["routine", "billing", "urgent"]
DESCRIPTORS = {"n_tokens", "n_chars", "unknown_share", "truncated", "n_words", "non_ascii_share", "digit_share",
               "upper_share", "punctuation_share", "distinct_share"}


def window(texts, net=None, brittle=0.0, *, stats=True, keep_texts=True):
    net = net or TextNet()
    rows = encode_texts(texts)
    pb, pc = text_predict(net, brittle)(rows)
    return dict(baseline=pb, candidate=pc, rows=rows, texts=list(texts) if keep_texts else None,
                text_stats=text_stats(texts) if stats else None)


def text_data(texts, ref_texts=None, *, brittle=0.0, seed=0, **kw):
    w = window(texts, brittle=brittle, **kw)
    ref = None
    if ref_texts is not None:
        r = window(ref_texts, brittle=brittle, **kw)
        ref = ReferenceData({"kind": "test"}, None, r["baseline"], r["candidate"], [{}] * len(ref_texts), None,
                            rows=r["rows"], texts=r["texts"], text_stats=r["text_stats"])
    return RunData("p", CLASSES, ["urgent"], w["baseline"], w["candidate"], None, [{}] * len(texts), {},
                   seed=seed, reference=ref, predict=text_predict(TextNet(), brittle), signature=TEXT_SIG,
                   rows=w["rows"], modality="text", texts=w["texts"], text_stats=w["text_stats"],
                   encode_texts=encode_texts)


def check(type_, **spec):
    return build_check(CheckSpec(type=type_, **spec))


def by_slice(results):
    return {r.slice: r for r in results}


def test_modality_follows_the_signature_and_the_tokenizer():
    assert modality_of(TEXT_SIG) == "text"
    assert modality_of(Signature.single((30,))) == "tabular"
    assert modality_of(None) == "tabular"
    assert modality_of(Signature.single((3, 32, 32))) == "image"
    assert modality_of(Signature.single((8, 8, 1))) == "image"
    assert modality_of(Signature((TensorSpec("a", "float32", (4,)), TensorSpec("b", "float32", (2,))))) == "tensor"
    assert modality_of(Signature((TensorSpec("x", "int64", (None,)),)), "auto", has_text=True) == "text"
    assert modality_of(TEXT_SIG, "tensor") == "tensor"
    with pytest.raises(ValueError, match="modality must be auto or one of"):
        modality_of(TEXT_SIG, "audio")


def test_text_drift_columns_are_descriptors_never_token_positions():
    data = text_data(messages(1, 300), messages(2, 300))
    names, cur, ref = drift_columns(data)
    assert set(names) <= DESCRIPTORS and {"n_tokens", "unknown_share", "truncated", "n_chars"} <= set(names)
    assert cur.shape == (300, len(names)) and ref.shape == (300, len(names))
    # the tokenizer's count includes CLS and SEP
    assert cur[:, names.index("n_tokens")].tolist() == [len(r["input_ids"]) for r in data.rows]


def test_text_descriptors_are_made_once_for_every_check_that_asks(monkeypatch):
    """The descriptors of both windows (the text's drift columns) are made once per run's data:
    announcing the columns (``tested_columns``, before the checks), data drift and the report
    read that one copy; a tabular window's columns, a reshape, are not held."""
    from sentinel.checks import drift

    data = text_data(messages(1, 300), messages(2, 300))
    made = []
    real = drift._descriptor_columns
    monkeypatch.setattr(drift, "_descriptor_columns", lambda d, ref: made.append(ref) or real(d, ref))
    checks = [check("data_drift", warn=0.1, fail=0.25)]
    assert drift.tested_columns(checks, data)
    results = checks[0].evaluate(data)
    names, cur, _ = drift_columns(data)
    assert made == [data.reference] and len(results) > 1 and cur.shape == (300, len(names))
    data.reference = replace(data.reference)     # another reference: made again
    drift_columns(data)
    assert len(made) == 2


def test_text_drift_catches_longer_messages_and_more_unknown_words():
    res = check("data_drift", warn=0.1, fail=0.25).evaluate(
        text_data(messages(1, 400, words=(10, 30), unknown=0.3), messages(2, 400)))
    st = {r.slice: r.status for r in res}
    assert st["overall"] == "fail"
    assert st["feature=n_tokens"] == "fail" and st["feature=unknown_share"] == "fail"
    assert st["feature=n_chars"] == "fail"
    # only 30 words at most: nothing is truncated at 48 tokens, so that column does not move
    assert st["feature=truncated"] == "pass"


def test_text_drift_catches_truncation_and_shouting():
    res = by_slice(check("data_drift", warn=0.1, fail=0.25).evaluate(
        text_data(messages(1, 400, words=(30, 70), shouting=0.5), messages(2, 400, words=(30, 70)))))
    assert res["feature=upper_share"].status == "fail"
    # same length distribution: truncated share the same (two-valued column: proportions test)
    assert res["feature=truncated"].evidence["method"] == "z" and res["feature=truncated"].status == "pass"


def test_text_drift_passes_same_distribution():
    res = check("data_drift", warn=0.1, fail=0.25).evaluate(text_data(messages(1, 400), messages(2, 400)))
    assert not [r for r in res if r.status in ("warn", "fail")]


def test_token_descriptors_come_from_the_rows_when_there_are_no_texts():
    # rows sent as tensors (padded by the client: pad ids and a zero mask count as no token)
    data = text_data(messages(1, 300, words=(10, 30)), messages(2, 300), stats=False, keep_texts=False)
    data.rows = [{"input_ids": np.concatenate([r["input_ids"], [0, 0]]),
                  "attention_mask": np.concatenate([r["attention_mask"], [0, 0]])} for r in data.rows]
    names, cur, _ = drift_columns(data)
    assert names == ["n_tokens", "distinct_share"]
    assert cur[:, 0].tolist() == [r["attention_mask"].sum() for r in data.rows]
    res = by_slice(check("data_drift", warn=0.1, fail=0.25).evaluate(data))
    assert res["feature=n_tokens"].status == "fail"


def test_texts_missing_for_some_rows_leave_those_rows_out_of_the_character_columns():
    texts = messages(1, 300)
    data = text_data(texts, messages(2, 300))
    data.texts = [t if i % 3 else None for i, t in enumerate(texts)]
    res = by_slice(check("data_drift", warn=0.1, fail=0.25).evaluate(data))
    assert res["feature=n_words"].evidence["n_current"] == 200
    assert res["feature=n_tokens"].evidence["n_current"] == 300


# -- robustness -----------------------------------------------------------------------------------


def test_token_edits_keep_special_tokens_padding_and_integer_ids():
    row = {"input_ids": np.array([2, 10, 11, 12, 13, 14, 3, 0, 0], dtype=np.int64),
           "attention_mask": np.array([1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=np.int64)}
    edit = TokenEdit("input_ids", "attention_mask", 0, {"keep_ids": [], "keep_ends": True})
    rng = np.random.default_rng(0)
    dropped = edit.dropout(row, 1.0, rng)
    assert dropped["input_ids"].tolist() == [2, 3, 0, 0] and dropped["attention_mask"].tolist() == [1, 1, 0, 0]
    unk = TokenEdit("input_ids", "attention_mask", 0, {"unk_id": 1}).dropout(row, 1.0, rng)
    assert unk["input_ids"].tolist() == [2, 1, 1, 1, 1, 1, 3, 0, 0]
    swapped = edit.swap(row, 1.0, rng)
    assert swapped["input_ids"].tolist() == [2, 11, 10, 13, 12, 14, 3, 0, 0]
    for r in (dropped, unk, swapped):
        assert r["input_ids"].dtype == np.int64
    keep = TokenEdit("input_ids", "attention_mask", 0, {"keep_ids": [12]}).dropout(row, 1.0, rng)
    assert keep["input_ids"].tolist() == [2, 12, 3, 0, 0]


def test_typos_swap_drop_or_double_letters_and_are_seeded():
    text = "please reset my password now"
    a, b = typos(text, 0.3, np.random.default_rng(1)), typos(text, 0.3, np.random.default_rng(1))
    assert a == b and a != text
    assert typos(text, 0.0, np.random.default_rng(1)) == text
    assert set(a) <= set(text)                      # letters are moved, dropped or doubled, never invented
    assert typos("a 1 2", 1.0, np.random.default_rng(0)).count("1") == 1  # digits and spaces untouched


@pytest.mark.parametrize("brittle", [3.0, 0.0])
def test_robustness_on_text_catches_a_brittle_candidate_and_never_adds_noise_to_ids(brittle):
    seen = []
    data = text_data(messages(5, 600), brittle=brittle, seed=2)
    data.predict = text_predict(TextNet(), brittle, seen)
    chk = check("robustness", warn=0.02, fail=0.05, params={"token_dropout": [0.1], "token_swaps": [0.1],
                                                             "typos": [0.05]})
    res = by_slice(chk.evaluate(data))
    assert set(res) == {"token_dropout=0.1", "token_swap=0.1", "typo=0.05"}
    for r in res.values():
        assert (r.status == "fail") is bool(brittle), r.message
        assert r.n == 600
    assert all(b["input_ids"].dtype == np.int64 for b in seen)
    assert all(set(np.unique(b["input_ids"][:, 0])) == {SPECIAL["[CLS]"]} for b in seen)
    assert [r.value for r in chk.evaluate(data)] == [r.value for r in res.values()]    # seeded


def test_robustness_on_rows_without_texts_uses_token_edits_only():
    data = text_data(messages(5, 300))
    data.texts = None
    res = check("robustness", params={"token_dropout": [0.2], "token_swaps": []}).evaluate(data)
    assert [r.slice for r in res] == ["token_dropout=0.2"]


def test_integer_tabular_inputs_get_dropout_but_never_noise():
    x = np.random.default_rng(0).integers(0, 5, (400, 6)).astype(np.int64)
    seen = []

    def predict(xs):
        seen.append(xs)
        z = np.asarray(xs, dtype=float) @ np.linspace(-1, 1, 6)
        p = 1 / (1 + np.exp(-z))
        both = np.stack([1 - p, p], axis=1)
        return both, both
    pb, pc = predict(x)
    data = RunData("p", ["a", "b"], [], pb, pc, None, [{}] * 400, {}, inputs=x, predict=predict,
                   signature=Signature.single((6,), dtype="int64"))
    res = check("robustness").evaluate(data)
    assert [r.slice for r in res] == ["dropout=0.1"]
    assert seen[-1].dtype == np.int64 and np.all(seen[-1] == np.round(seen[-1]))
