"""ItemPop for scenario tasks (s²Meta 5.1.2, the heuristic baseline).

"Items are ranked according to their popularity in specific scenarios, judged by the number of
interactions in corresponding training sets." Fitted on every training interaction of the scenario
protocol (``ScenarioData.training_frame``: the scenario's D_train, the scenario-only users' interactions
with its items and, for items shared with meta-train scenarios, their D_test), so it sees the same data as
the other methods (A.4). Ranking a scenario's items by their count in that pool is ranking them by their
count in the scenario: an item's interactions belong to every scenario that contains it. Unlike
:class:`metarec.learners.baselines.ItemPop`, ``score(users, items)`` gives the counts too (scenario
evaluation scores (user, item) pairs).
"""

from __future__ import annotations

from metarec.learners.base import Adapted
from metarec.learners.baselines import ItemPop
from metarec.tasks import TaskBatch


class ScenarioItemPop(ItemPop):
    name = "scenario-itempop"

    def adapt(self, support: TaskBatch) -> Adapted:
        B = len(support)

        def score(users, items):
            return self.item_count[items]  # (B, N)

        def score_items(items):
            return self.item_count[items][None, :].expand(B, len(items))

        return Adapted(support.owner, score, score_items)
