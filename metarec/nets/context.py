"""The encoded side information every feature-based network reads (built by the runners from a split)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Context:
    """Encoded side information of every user and item, as the learners consume it."""

    user_codes: Tensor  # (n_users, F_u) long, 0 = unknown
    item_codes: Tensor  # (n_items, F_i) long
    item_genre: Tensor  # (n_items, G) float multi-hot
    user_cards: list[int]
    item_cards: list[int]
    item_ids: Tensor | None = None  # (n_items,) long: 1 + rank among meta-train items, 0 = unseen there

    @property
    def n_users(self) -> int:
        return int(self.user_codes.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_codes.shape[0])

    def state(self) -> dict:
        return {"user_codes": self.user_codes, "item_codes": self.item_codes, "item_genre": self.item_genre,
                "user_cards": self.user_cards, "item_cards": self.item_cards, "item_ids": self.item_ids}
