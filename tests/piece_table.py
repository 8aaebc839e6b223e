"""A tokenizer stand-in for the LM-fusion tests (tests only): ids 0 blank, 1 <unk>, then the
given pieces, with the two attributes TokenLm and WordLm read."""

from __future__ import annotations


class PieceTable:
    unk = 1

    def __init__(self, pieces):
        self.table = ["<blank>", "<unk>", *pieces]
        self.vocab_size = len(self.table)

    def id_to_piece(self, i):
        return self.table[i]
