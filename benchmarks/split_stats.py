"""Split statistics of the built-in datasets for every protocol; writes docs/split_stats.md.

Run: .venv/bin/python benchmarks/split_stats.py [--datasets ml-100k ml-1m] [--by time]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metarec.data.registry import load_dataset
from metarec.io import write_text
from metarec.report import markdown_table, split_rows
from metarec.splits import PROTOCOLS, SplitConfig, make_split
from metarec.tasks import TaskConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", nargs="+", default=["ml-100k", "ml-1m"])
    ap.add_argument("--by", default="time")
    ap.add_argument("--out", default="docs/split_stats.md")
    args = ap.parse_args()
    cmd = f"`.venv/bin/python benchmarks/split_stats.py --datasets {' '.join(args.datasets)} --by {args.by}`"
    parts = ["# Split statistics", "", f"Produced by {cmd}. Tasks use the MeLU sizing (owners with 13-100 "
             "interactions, 10 query, the rest support); defaults of `metarec split`.", ""]
    for name in args.datasets:
        ds = load_dataset(name)
        for protocol in PROTOCOLS:
            split = make_split(ds, SplitConfig(protocol=protocol, by=args.by))
            header, rows = split_rows(ds, split, TaskConfig())
            desc = split.describe()
            parts += [f"## {name}, {protocol}, by {args.by}", "",
                      f"T = {desc.get('T', '-')}; new users {desc['new_users']}, new items {desc['new_items']} "
                      f"(release year {desc.get('new_item_release_year', '-')}).", "",
                      markdown_table(header, rows), ""]
            print(f"{name} {protocol}: " + ", ".join(f"{r[0]} {r[1]} tasks" for r in rows))
    write_text(Path(args.out), "\n".join(parts))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
