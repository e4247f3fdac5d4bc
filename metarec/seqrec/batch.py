"""The padded batch of sequence tasks every sequence model and the evaluation read.

Layout (documented for every consumer): item CODES are item index + 1, code 0 is padding; sequences are
RIGHT-padded, so position 0 is the first item of the task's window and absolute positions are the same for
a prefix and for the longer sequence it belongs to (with causal models a prefix's outputs never depend on
what follows it). Output position t predicts the item at position t + 1 from ``seq[:, :t + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarec.errors import MetarecError
from metarec.tasks import Task


@dataclass
class SeqBatch:
    owner: torch.Tensor  # (B,) long user index
    seq: torch.Tensor  # (B, L) long item codes (index + 1), 0 = padding, right-padded
    length: torch.Tensor  # (B,) long real length of each sequence
    target: torch.Tensor  # (B, L) long code predicted at output position t (= seq[:, t + 1]), 0 = none
    s_mask: torch.Tensor  # (B, L) bool: output position t is a support prediction
    q_mask: torch.Tensor  # (B, L) bool: output position t is a query prediction
    q_pos: torch.Tensor  # (B, Q) long: the query output positions of each task, in order (0 where padded)
    q_valid: torch.Tensor  # (B, Q) bool

    def __len__(self) -> int:
        return int(self.owner.shape[0])

    def to(self, device) -> SeqBatch:
        return SeqBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    @property
    def t_mask(self) -> torch.Tensor:
        """(B, L) bool: every position with a target (support or query): what direct training fits."""
        return self.s_mask | self.q_mask

    def last_queries(self, m: int) -> SeqBatch:
        """The same tasks with a query of the last ``m`` target positions of each row and the earlier targets as
        the support (a meta-train window cut the way a new user's task is: support first, ``m`` queries after).

        A row keeps at least one support target when it has two or more targets (a row with ``k`` targets gets
        ``min(m, k - 1)`` queries, a row with one target keeps it as its query). ``m = 1`` on prefix-augmented
        windows gives back their own split (the last prefix is the query, section 4.4.1 of MML).
        """
        if m < 1:
            raise MetarecError(f"a task needs at least one query position, got m = {m}")
        t = self.t_mask
        n = t.sum(1, keepdim=True)  # (B, 1) targets per row
        k = torch.clamp(torch.minimum(torch.full_like(n, m), n - 1), min=1)  # (B, 1) queries per row
        rank = torch.cumsum(t.long(), dim=1)  # (B, L) 1-based index among the row's targets
        q_mask = t & (rank > n - k)
        L = self.seq.shape[1]
        ar = torch.arange(L, device=q_mask.device).expand_as(q_mask)
        Q = max(1, int(k.max()))
        order = torch.sort(torch.where(q_mask, ar, L), dim=1).values[:, :Q]  # query positions first, in order
        q_valid = torch.arange(Q, device=q_mask.device)[None, :] < torch.where(n > 0, k, 0)
        return SeqBatch(owner=self.owner, seq=self.seq, length=self.length, target=self.target,
                        s_mask=t & ~q_mask, q_mask=q_mask, q_pos=torch.where(q_valid, order, 0), q_valid=q_valid)

    def support_only(self) -> SeqBatch:
        """What an ``adapt`` may look at: items after the last support target are zeroed, no query.

        Causal models compute the same support outputs either way; methods that pool over the whole
        sequence (CBML's task representation) must use this view.
        """
        L = self.seq.shape[1]
        ar = torch.arange(L, device=self.seq.device)  # (L,)
        last = torch.where(self.s_mask, ar, -1).amax(dim=1)  # (B,) last support output position, -1 if none
        keep = ar[None, :] <= (last + 1)[:, None]  # (B, L) inputs up to the last support target
        keep &= last[:, None] >= 0
        tkeep = ar[None, :] <= last[:, None]  # (B, L)
        return SeqBatch(owner=self.owner, seq=self.seq * keep, length=keep.sum(1), target=self.target * tkeep,
                        s_mask=self.s_mask, q_mask=torch.zeros_like(self.q_mask), q_pos=torch.zeros_like(self.q_pos),
                        q_valid=torch.zeros_like(self.q_valid))


def collate_seq(tasks: list[Task]) -> SeqBatch:
    """Pad sequence tasks (``extra`` with ``seq``, ``s_pos``, ``q_pos``) into one :class:`SeqBatch`."""
    if not tasks:
        raise MetarecError("cannot collate an empty list of sequence tasks")
    seqs = [np.asarray(t.extra["seq"], dtype=np.int64) for t in tasks]
    lens = np.array([len(s) for s in seqs])
    B, L = len(tasks), int(lens.max())
    valid = np.arange(L)[None, :] < lens[:, None]  # (B, L)
    seq = np.zeros((B, L), dtype=np.int64)
    seq[valid] = np.concatenate(seqs) + 1
    target = np.zeros((B, L), dtype=np.int64)
    target[:, :-1] = seq[:, 1:]
    s_rows = np.concatenate([np.full(len(t.extra["s_pos"]), b) for b, t in enumerate(tasks)]).astype(np.int64)
    s_cols = np.concatenate([np.asarray(t.extra["s_pos"], dtype=np.int64) - 1 for t in tasks])
    q_n = np.array([len(t.extra["q_pos"]) for t in tasks])
    q_rows = np.repeat(np.arange(B), q_n)
    q_cols = np.concatenate([np.asarray(t.extra["q_pos"], dtype=np.int64) - 1 for t in tasks])
    s_mask = np.zeros((B, L), dtype=bool)
    s_mask[s_rows, s_cols] = True
    q_mask = np.zeros((B, L), dtype=bool)
    q_mask[q_rows, q_cols] = True
    Q = max(1, int(q_n.max()))
    q_valid = np.arange(Q)[None, :] < q_n[:, None]  # (B, Q)
    q_pos = np.zeros((B, Q), dtype=np.int64)
    q_pos[q_valid] = q_cols
    owner = torch.tensor([t.owner for t in tasks], dtype=torch.long, device="cpu")  # collated on the CPU
    return SeqBatch(owner=owner, seq=torch.from_numpy(seq),
                    length=torch.from_numpy(lens.astype(np.int64)), target=torch.from_numpy(target),
                    s_mask=torch.from_numpy(s_mask), q_mask=torch.from_numpy(q_mask), q_pos=torch.from_numpy(q_pos),
                    q_valid=torch.from_numpy(q_valid))
