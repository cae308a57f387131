"""Real small pieces for the typed-input check tests: a word-level tokenizer built with the
`tokenizers` library (CLS/SEP/UNK/PAD like a BERT tokenizer), a generator of support messages,
and tiny torch models run on collated rows."""
import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from sentinel.tensors import Signature, TensorSpec, collate

WORDS = ("my order is late please help the app crashes when I log in refund needed for a broken item "
         "thanks great service where is parcel account locked password reset urgent now cannot pay "
         "invoice wrong address delivery today tomorrow again still waiting support team").split()
SPECIAL = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
TEXT_SIG = Signature((TensorSpec("input_ids", "int64", (None,)), TensorSpec("attention_mask", "int64", (None,))))
MAX_LENGTH = 48


def tokenizer() -> Tokenizer:
    vocab = dict(SPECIAL)
    for w in WORDS:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", SPECIAL["[CLS]"]), ("[SEP]", SPECIAL["[SEP]"])])
    tok.enable_truncation(MAX_LENGTH)
    return tok


TOK = tokenizer()


def encode_texts(texts):
    """Texts as rows (int64 ids and mask, truncated, no padding): what a pair's tokenizer gives."""
    return [{"input_ids": np.asarray(e.ids, dtype=np.int64), "attention_mask": np.asarray(e.attention_mask, dtype=np.int64)}
            for e in TOK.encode_batch([t.lower() for t in texts])]


def text_stats(texts):
    enc = TOK.encode_batch([t.lower() for t in texts])
    return {"n_tokens": np.asarray([len(e.ids) for e in enc], dtype=float),
            "n_chars": np.asarray([len(t) for t in texts], dtype=float),
            "unknown_share": np.asarray([np.mean(np.asarray(e.ids[1:-1]) == 1) if len(e.ids) > 2 else 0.0 for e in enc]),
            "truncated": np.asarray([len(e.overflowing) > 0 for e in enc], dtype=float)}


def messages(seed, n, *, words=(4, 14), unknown=0.0, shouting=0.0):
    """Support messages: ``words`` is the range of their length; ``unknown`` the share of words
    outside the vocabulary; ``shouting`` the share of messages in capitals."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(*words))
        ws = [str(rng.choice(WORDS)) if rng.random() >= unknown else f"zz{rng.integers(1000)}" for _ in range(k)]
        t = " ".join(ws)
        out.append(t.upper() if rng.random() < shouting else t)
    return out


class TextNet(torch.nn.Module):
    """Token + position embeddings, masked mean, a linear head: 3 classes."""

    def __init__(self, seed=0, vocab=len(SPECIAL) + len(WORDS) + 1, dim=16, classes=3):
        super().__init__()
        torch.manual_seed(seed)
        self.tok = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(MAX_LENGTH + 8, dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, ids, mask, brittle=0.0):
        pos = torch.arange(ids.shape[1])[None, :]
        h = self.tok(ids) + 0.3 * self.pos(pos)
        m = mask[..., None].float()
        z = self.head((h * m).sum(1) / m.sum(1).clamp(min=1))
        if brittle:     # a candidate that hangs on the exact token sequence
            order = (ids * (pos + 1) * mask).sum(1, keepdim=True).float()
            z = z + brittle * torch.sin(order * 12.9898 + torch.arange(z.shape[1]) * 2.1)
        return torch.softmax(z, dim=1)


def text_predict(net, brittle, seen=None):
    """``predict`` for text rows: collate (pad per batch), run baseline and candidate."""
    def predict(rows):
        assert isinstance(rows, list)
        batch = collate(rows, TEXT_SIG)
        if seen is not None:
            seen.append(batch)
        ids, mask = torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])
        with torch.no_grad():
            return net(ids, mask).double().numpy(), net(ids, mask, brittle).double().numpy()
    return predict
