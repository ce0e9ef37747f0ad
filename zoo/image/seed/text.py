"""BERT WordPiece tokenisation for the Q-Former's text side (stage-1 captions), from a `vocab.txt`.

The official code uses `BertTokenizer.from_pretrained("bert-base-uncased")` plus one added token `[DEC]` (id =
vocabulary size, so the Q-Former's word table has 30523 rows), pads to `max_txt_len` 32 and truncates. This is the
same algorithm without a transformers dependency: lower-casing and accent stripping, splitting on whitespace,
punctuation and CJK characters, then greedy longest-match-first word pieces (`##` continuations), `[UNK]` for
words that cannot be split, `[CLS] ... [SEP]` around each caption.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = ["SPECIAL_TOKENS", "WordPieceTokenizer", "write_vocab"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokens(text: str, lowercase: bool = True) -> list[str]:
    """BERT's basic tokenisation: clean, (lower-case and strip accents), split off punctuation and CJK characters."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        chars.append(" " if ch.isspace() else (f" {ch} " if _is_cjk(cp) else ch))
    words = []
    for word in "".join(chars).split():
        if lowercase:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punctuation(ch):
                if piece:
                    words.append(piece)
                words.append(ch)
                piece = ""
            else:
                piece += ch
        if piece:
            words.append(piece)
    return words


class WordPieceTokenizer:
    """Captions -> padded id tensors for `CausalQFormer.encode_text`.

    Args:
        vocab_file: BERT `vocab.txt` (one token per line; id = line number), with [PAD] [UNK] [CLS] [SEP].
        max_length: pad / truncate to this many ids ([CLS] and [SEP] included; the official max_txt_len is 32).
        lowercase: the uncased BERT convention.
        add_dec_token: append `[DEC]` after the vocabulary (BLIP-2's `init_tokenizer`), as the official word table.
    """

    def __init__(self, vocab_file: str | Path, max_length: int = 32, lowercase: bool = True,
                 add_dec_token: bool = True) -> None:
        path = Path(vocab_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no WordPiece vocabulary at {path}: use bert-base-uncased's vocab.txt (the "
                                    "official one) or write one with zoo.image.seed.text.write_vocab")
        tokens = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
        self.vocab = {tok: i for i, tok in enumerate(tokens) if tok}
        missing = [t for t in SPECIAL_TOKENS[:4] if t not in self.vocab]
        if missing:
            raise ValueError(f"{path} lacks the special tokens {missing}; it is not a BERT vocab.txt")
        if add_dec_token and "[DEC]" not in self.vocab:
            self.vocab["[DEC]"] = len(tokens)
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        self.max_length, self.lowercase = max_length, lowercase
        self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]

    def __len__(self) -> int:
        """Rows the word table needs (`text_vocab_size`)."""
        return max(self.vocab.values()) + 1

    def wordpieces(self, word: str, max_chars: int = 100) -> list[int]:
        if len(word) > max_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [i for word in basic_tokens(text, self.lowercase) for i in self.wordpieces(word)]
        return [self.cls_id] + ids[: self.max_length - 2] + [self.sep_id]

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> (ids `[B, max_length]`, attention mask `[B, max_length]`, 1 on real tokens)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of captions, not one string")
        ids = torch.full((len(texts), self.max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, text in enumerate(texts):
            encoded = self.encode(text)
            ids[row, : len(encoded)] = torch.tensor(encoded)
            mask[row, : len(encoded)] = 1
        return ids, mask


def write_vocab(texts: Iterable[str], path: str | Path, lowercase: bool = True) -> Path:
    """A whole-word BERT-style vocab.txt for a caption set (special tokens first, then words by frequency and
    name): enough for small runs without bert-base-uncased's 30522-token file."""
    counts = Counter(w for text in texts for w in basic_tokens(text, lowercase))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    path = Path(path)
    path.write_text("\n".join(list(SPECIAL_TOKENS) + words) + "\n", encoding="utf-8")
    return path
