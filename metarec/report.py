"""Plain-text and markdown tables for the terminal and for docs/."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from metarec.data.types import Dataset
from metarec.splits import Split
from metarec.tasks import TaskConfig, build_tasks, task_stats

# The core every family's result record shares (first, in this order); each family keeps its own keys after it
# (rating: view, preset, split; scenario: label, per_scenario; sequential: config, stages; warm-up: phases, ...).
# "test" and "valid" map metric names to numbers (warm-up: "auc@cold", "logloss@warm-a", ...).
RESULT_CORE = ("method", "family", "protocol", "dataset", "seed", "test", "valid", "best_epoch", "train_seconds")


def with_core(result: dict, *, method: str, family: str, protocol: str, dataset: str) -> dict:
    """``result`` with the shared core's identifying keys first; the rest of the record is kept as it is (a
    family's own value of a core key, such as a compare label as ``method``, is the caller's to set after)."""
    core = {"method": method, "family": family, "protocol": protocol, "dataset": dataset}
    return {**core, **{k: v for k, v in result.items() if k not in core}}


def markdown_table(header: list[str], rows: list[list]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[j]) for r in cells)) if cells else len(h) for j, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in cells)])


def mean_std_rows(results: list[dict], label: Callable[[dict], str], columns: Sequence[str],
                  value: Callable[[dict, str], float], order: Sequence[str] | None = None) -> list[tuple[list, list]]:
    """The one "mean ± std over seeds" table body of every family: per label (``order``, else first-seen order of
    ``label(r)``) the cells ``[label, seeds, "mean ± std" of value(r, c) for each column]`` with that label's
    results, for the caller to add its own columns (tasks, train seconds, ...)."""
    labels = list(order) if order is not None else list(dict.fromkeys(label(r) for r in results))
    out = []
    for name in labels:
        rs = [r for r in results if label(r) == name]
        cells: list = [name, len(rs)]
        for c in columns:
            v = np.array([value(r, c) for r in rs], dtype=float)
            cells.append(f"{v.mean():.4f} ± {v.std():.4f}")
        out.append((cells, rs))
    return out


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.4f}" if abs(c) < 100 else f"{c:.1f}"
    return str(c)


def split_rows(ds: Dataset, split: Split, task_cfg: TaskConfig) -> tuple[list[str], list[list]]:
    """One row per part: tasks, support/query sizes, users/items (new ones), interactions."""
    header = ["part", "tasks", "support mean [min-max]", "query mean", "users", "new users", "items",
              "new items", "task interactions", "raw interactions"]
    rows = []
    for name, df in split.parts.items():
        tasks = build_tasks(df, task_cfg, desc=name)
        st = task_stats(tasks)
        users = np.unique(np.concatenate([np.r_[t.s_user, t.q_user] for t in tasks])) if tasks else np.array([], int)
        items = np.unique(np.concatenate([np.r_[t.s_item, t.q_item] for t in tasks])) if tasks else np.array([], int)
        rows.append([name, st["tasks"], f"{st['support_mean']:.1f} [{st['support_min']}-{st['support_max']}]",
                     f"{st['query_mean']:.1f}", len(users), int(split.user_new[users].sum()), len(items),
                     int(split.item_new[items].sum()), st["interactions"], len(df)])
    return header, rows


def compare_table(results: list[dict], part: str = "test") -> str:
    """Mean ± std over seeds of each learner's ``part`` metrics, "test" (meta-test) or "valid" (meta-valid, the
    selection data) (rows: learners in first-seen order)."""
    metrics = [k for k in results[0][part] if k not in ("tasks", "epoch", "train_loss")]
    rows = [[*cells, rs[0][part]["tasks"]] for cells, rs in
            mean_std_rows(results, label_of, metrics, lambda r, m: r[part][m])]
    return markdown_table(["learner", "seeds", *metrics, f"{part} tasks"], rows)


# ------------------------------------------------------------------------------- the families' tables
# one module for every family's mean ± std table (the experiment runner writes them; the bodies are
# mean_std_rows')

SCENARIO_METRICS = ("recall@10", "recall@20", "recall@50")
SEQUENTIAL_METRICS = tuple(f"{m}@{k}" for m in ("recall", "mrr", "ndcg") for k in (5, 10, 20))
WARMUP_PHASES = ("cold", "warm-a", "warm-b", "warm-c")


def label_of(r: dict) -> str:
    """A result record's row label: its compare label, else its method (older rating records: learner)."""
    return r.get("label") or r.get("method") or r["learner"]


def scenario_table(results: list[dict], metrics: Sequence[str] = SCENARIO_METRICS) -> str:
    """s²Meta's scenarios: Recall@K per method, with the mean inner steps and training seconds."""
    rows = []
    for cells, rs in mean_std_rows(results, label_of, metrics, lambda r, m: r["test"][m]):
        steps = [r["test"]["inner_steps"] for r in rs if "inner_steps" in r["test"]]
        rows.append([*cells, f"{np.mean(steps):.1f}" if steps else "",
                     f"{np.mean([r['train_seconds'] for r in rs]):.0f}"])
    return markdown_table(["method", "seeds", *metrics, "inner steps", "train s"], rows)


def sequential_table(results: list[dict], metrics: Sequence[str] | None = None) -> str:
    """MML's protocol: Recall, MRR and nDCG at 5, 10, 20 per method, with the training seconds."""
    metrics = tuple(metrics or SEQUENTIAL_METRICS)
    rows = [[*cells, f"{np.mean([r['train_seconds'] for r in rs]):.0f}"] for cells, rs in
            mean_std_rows(results, label_of, metrics, lambda r, m: r["test"][m])]
    return markdown_table(["method", "seeds", *metrics, "train s"], rows)


def warmup_tables(results: list[dict], methods: Sequence[str] | None = None) -> str:
    """The item warm-up's two tables (AUC, log-loss): a row per method, a column per phase."""
    out = []
    for metric, title in (("auc", "AUC (higher is better)"), ("logloss", "log-loss (lower is better)")):
        def value(r: dict, p: str, metric: str = metric) -> float:
            return r["phases"][p][metric]

        rows = [cells for cells, _ in mean_std_rows(results, label_of, WARMUP_PHASES, value, methods)]
        out.append(f"{title}\n\n" + markdown_table(["method", "seeds", *WARMUP_PHASES], rows))
    return "\n\n".join(out)

