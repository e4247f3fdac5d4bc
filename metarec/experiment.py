"""The one experiment runner: ``compare`` and ``merge`` for every protocol family, one record layout, one report.

A family hands over an :class:`Experiment`: which family, protocol and dataset, and ``records(seed, skip)``, a
generator of the finished result records of one seed (every learner entry whose label is not in ``skip``, in
entry order; each family's own runner trains and evaluates). Everything around it is here, once:

- the loop over seeds, a progress line per finished run, and ``OUT.partial.json`` rewritten after every run; run
  the same command again after an interruption and the finished (label, seed) runs are taken from it, not rerun
  (removed when the comparison completes);
- one record layout, ``OUT.json``: provenance (``command`` and ``code``; merged: ``commands``, ``codes``,
  ``merged_by``), ``family``, ``protocol``, ``dataset``, the family's extra keys (sequential: ``protocol_stats``;
  warm-up: ``runs``, one per seed with its split and backbone) and ``results``, each record starting with the
  result core (``metarec.report.RESULT_CORE``);
- one report, ``OUT.md``: a title, the provenance, the family's description of its protocol and its mean ± std
  table (``metarec.report``);
- one ``merge`` of any family's records (several seeds run as separate processes, or records of other runs):
  one family, dataset and protocol, run with the same protocol settings (seed aside); a (label, seed) pair once.
"""

from __future__ import annotations

import json
import resource
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from metarec import report
from metarec.errors import MetarecError
from metarec.io import code_version, read_record, record_codes, write_json, write_text, writer

__all__ = ["Experiment", "compare", "merge", "write_report", "family_of_record"]


@dataclass
class Experiment:
    family: str  # rating, scenario, sequential, warmup
    protocol: str
    dataset: str
    records: Callable[[int, set[str]], Iterable[dict]]  # (seed, labels to skip) -> finished records, entry order
    extra: dict = field(default_factory=dict)  # family-level keys of OUT.json (sequential: protocol_stats)
    runs: list = field(default_factory=list)  # per-seed information the family appends while running (warm-up)
    valid: bool = False  # the report also shows the meta-valid table (rating family)
    drop: tuple[str, ...] = ("history",)  # record keys left out of OUT.json (per-epoch histories)


def _headline(r: dict) -> str:
    test = r["test"]
    keys = [k for k, v in test.items() if isinstance(v, int | float) and k not in ("tasks", "rows", "users")][:6]
    preset = f", preset {r['preset'] or 'none'}" if "preset" in r else ""  # the rating family's named presets
    return "  ".join(f"{k} {test[k]:.4f}" for k in keys) + f"  ({r.get('train_seconds', 0.0):.0f} s{preset})"


def compare(exp: Experiment, seeds: list[int], argv: list[str], out: str | Path | None) -> list[dict]:
    """Run ``exp`` for every seed; print the family's table; with ``out``, write OUT.md and OUT.json."""
    command = "metarec " + shlex.join(argv)
    version = code_version()  # the code that runs, before anything can change the working tree
    partial = Path(out).with_suffix(".partial.json") if out else None
    done: dict[tuple[str, int], dict] = {}
    if partial is not None and partial.is_file():
        blob = read_record(partial, "partial compare record", result_keys=("seed", "test"))
        if blob.get("command") == command:
            done = {(report.label_of(r), r["seed"]): r for r in blob["results"]}
            print(f"resuming: {len(done)} finished run(s) from {partial}", flush=True)
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():  # a multi-process run: every rank skips what rank 0 does
        box = [done]
        tdist.broadcast_object_list(box, src=0)
        done = box[0]
    results: list[dict] = []
    for seed in seeds:
        kept = [r for (_, s), r in done.items() if s == seed]
        results += kept
        for rec in exp.records(seed, {report.label_of(r) for r in kept}):
            for k in exp.drop:
                rec.pop(k, None)
            rec["code"] = version
            results.append(rec)
            if not writer():  # a rank other than 0 of a multi-process run: rank 0 reports
                continue
            print(f"seed {seed} {report.label_of(rec)}: {_headline(rec)}", flush=True)
            if partial is not None:  # finished runs survive an interruption
                write_json(partial, {"command": command, "code": version, "results": results})
    if not writer():
        return results
    print(family_tables(exp.family, results, exp.valid))
    if out:
        write_report(Path(out), results, {"command": command, "code": version}, exp)
    if partial is not None:
        partial.unlink(missing_ok=True)
    return results


def family_tables(family: str, results: list[dict], valid: bool = False) -> str:
    if family == "scenario":
        return report.scenario_table(results)
    if family == "sequential":
        return report.sequential_table(results)
    if family == "warmup":
        return report.warmup_tables(results)
    out = report.compare_table(results)
    if valid:
        seeds = ", ".join(map(str, sorted({r["seed"] for r in results})))
        out += (f"\n\nMeta-valid tasks (the selection data: each run's best epoch); mean ± std over seeds {seeds}."
                f"\n\n{report.compare_table(results, 'valid')}")
    return out


def _described(family: str, results: list[dict], extra: dict, runs: list) -> tuple[str, str]:
    """The family's title and its paragraph on what the table measures."""
    first = results[0]
    seeds = ", ".join(map(str, sorted({r["seed"] for r in results})))
    if family == "scenario":
        d = first["scenarios"]
        return (f"s²Meta scenarios on {first['dataset']}",
                f"Meta-test scenarios ({first['test']['tasks']} per seed, attribute `{d['attribute']}`); mean ± std "
                f"over seeds {seeds} (each seed draws its own scenario split); Recall@K over all items of each "
                "scenario (the user's training items excluded), averaged over the scenario's test users, then over "
                "scenarios. Models and adapt-time hyperparameters selected on meta-valid scenarios. 'inner steps': "
                "mean scenario-specific learning steps on meta-test (s²Meta); 'train s': wall seconds of training "
                "and selection on a shared 2-core machine.")
    if family == "sequential":
        st = extra.get("protocol_stats", {})
        return (f"Cold-start sequential recommendation on {st.get('dataset', first['dataset'])} (MML protocol)",
                "Meta-test = the new users (first interaction at or after T); full ranking over all "
                f"{st.get('items', '?')} items (only a row's own history prefix is excluded); mean ± std over seeds "
                f"{seeds}; models selected on meta-valid (the old users who arrived last). `train s`: wall-clock "
                "seconds of training and model selection per seed, on a shared 2-core machine.")
    if family == "warmup":
        w = runs[0]["config"]["warmup"] if runs else {}
        split = runs[0]["split"] if runs else {}
        text = f"New items' test interactions pooled; mean ± std over seeds {seeds}."
        if w:
            up = w["update"]
            text += (f" Labels: rating >= {w['threshold']:g}. Old items: > {w['old_min']} interactions "
                     f"({split.get('old_items', '?')}); new items: {3 * w['k'] + w['min_test']}-{w['old_min']} "
                     f"({split.get('new_items', '?')}); warm-up batches of k = {w['k']} per item; update: "
                     f"{up['steps']} gradient step(s) of rate {up['lr']:g} on the new items' ID parameters, backbone "
                     "(DeepFM) frozen.")
        return f"Item warm-up on {first['dataset']}", text
    used: dict[str, str] = {}
    for r in results:
        used.setdefault(report.label_of(r), r.get("preset", ""))
    text = f"Test tasks (meta-test); mean ± std over seeds {seeds}; models selected on meta-valid."
    if any(used.values()):
        text = ("Presets (metarec/presets.json): " + ", ".join(
            f"{label}: {p or 'none (registry defaults)'}" for label, p in used.items()) + "\n\n" + text)
    return f"{first['dataset']}, {first['protocol']}, {first.get('view', 'explicit')} view", text


def write_report(stem: Path, results: list[dict], provenance: dict, exp: Experiment, title: str | None = None) -> None:
    """STEM.md (title, provenance, the protocol's description, the table) and STEM.json (every record), each
    written atomically. ``provenance``: {"command", "code"} of one run, or {"commands", "codes", "merged_by"}."""
    if not results:
        raise MetarecError("no results to write")
    default_title, text = _described(exp.family, results, exp.extra, exp.runs)
    if "command" in provenance:
        made = f"Command: `{provenance['command']}` (code: {record_codes(results)})"
    else:
        runs = "\n".join(f"    {c}" for c in provenance["commands"])
        made = (f"Merged by `{provenance['merged_by']}` from these runs (code: {', '.join(provenance['codes'])}):"
                f"\n\n{runs}")
    md = f"# {title or default_title}\n\n{made}\n\n{text}\n\n{family_tables(exp.family, results, exp.valid)}\n"
    st = exp.extra.get("protocol_stats")
    if st:
        md += "\n## Protocol\n\n" + "\n".join(f"- {k}: {v}" for k, v in st.items()
                                              if not k.startswith(("train.", "valid.", "test."))) + "\n"
    write_text(stem.with_suffix(".md"), md)
    blob = {**provenance, "family": exp.family, "protocol": exp.protocol, "dataset": exp.dataset, **exp.extra}
    if exp.runs:
        blob["runs"] = exp.runs
    if exp.family == "warmup":
        blob["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(stem.with_suffix(".json"), {**blob, "results": results})
    print(f"wrote {stem.with_suffix('.md')} and {stem.with_suffix('.json')}")


def family_of_record(r: dict, blob: dict) -> str:
    """A record's family: its core key, else (records written before the core) read from its keys."""
    if r.get("family"):
        return r["family"]
    if isinstance(blob.get("protocol"), dict) or "stages" in r:
        return "sequential"
    if "scenarios" in r:
        return "scenario"
    if "phases" in r:
        return "warmup"
    return "rating"


def _settings(r: dict, blob: dict) -> str:
    """The protocol settings a record was run with, seed left out, as canonical JSON ("" when not recorded)."""
    rc = r.get("run_config") or {}
    if "split" in rc:  # rating
        part = {"split": rc["split"], "tasks": rc.get("tasks"), "view": rc.get("view"),
                "threshold": rc.get("threshold"), "negatives": rc.get("negatives")}
    elif "scenarios" in rc:
        part = {"scenarios": rc["scenarios"]}
    elif blob.get("runs"):  # warm-up: the runs of its file
        part = {"warmup": [run.get("config", {}).get("warmup") for run in blob["runs"]][0]}
    else:
        return ""

    def drop_seed(x):
        if isinstance(x, dict):
            return {k: drop_seed(v) for k, v in x.items() if k != "seed"}
        return x

    return json.dumps(drop_seed(part), sort_keys=True, default=str)


def _first_difference(a: str, b: str) -> str:
    def flat(d, pre=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{pre}{k}.") if isinstance(v, dict) else {f"{pre}{k}": v})
        return out

    fa, fb = flat(json.loads(a)), flat(json.loads(b))
    k = next((k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)), "?")
    return f"{k}: {fa.get(k)} -> {fb.get(k)}"


def merge(inputs: list[str], out: str | Path, argv: list[str], labels: list[str] | None = None,
          title: str | None = None, valid: bool = False) -> list[dict]:
    """One table from several records of one family, dataset and protocol (e.g. one per seed, run in parallel);
    ``labels``: keep these rows, in this order."""
    commands: list[str] = []
    results: list[dict] = []
    runs: list[dict] = []
    extra: dict = {}
    settings: set[str] = set()
    families = set()
    for path in inputs:
        blob = read_record(Path(path), "`metarec compare` record", result_keys=("seed", "test"))
        commands += blob.get("commands", [blob["command"]] if "command" in blob else [])
        for r in blob["results"]:
            families.add(family_of_record(r, blob))
            if "code" not in r and isinstance(blob.get("code"), str):  # records that kept it in their file only
                r["code"] = blob["code"]
        st = blob.get("protocol_stats", blob.get("protocol") if isinstance(blob.get("protocol"), dict) else None)
        if st is not None:
            if extra and extra["protocol_stats"] != st:
                raise MetarecError(f"{path}: another sequential protocol than {inputs[0]}; cannot merge")
            extra = {"protocol_stats": st}
        runs += blob.get("runs", [])
        mine = {_settings(r, blob) for r in blob["results"]} - {""}
        if mine and settings and mine != settings:
            raise MetarecError(f"{path}: run with other protocol settings than {inputs[0]} "
                               f"({_first_difference(min(settings), min(mine))}); cannot merge")
        settings = settings or mine
        results += blob["results"]
    if not results:
        raise MetarecError("no results to merge")
    if len(families) > 1:
        raise MetarecError(f"cannot merge records of different protocol families: {sorted(families)}")
    kinds = {(r.get("dataset"), r.get("protocol"), r.get("view")) for r in results}
    if len(kinds) > 1:
        raise MetarecError(f"cannot merge records of different runs: {sorted(kinds, key=str)}")
    seen = [(report.label_of(r), r["seed"]) for r in results]
    dup = sorted({k for k in seen if seen.count(k) > 1})
    if dup:
        raise MetarecError(f"learner and seed present twice: {dup}")
    if labels:
        missing = [lab for lab in labels if lab not in {s[0] for s in seen}]
        if missing:
            raise MetarecError(f"--labels {', '.join(missing)}: not in the records (they hold "
                               f"{', '.join(dict.fromkeys(s[0] for s in seen))})")
        order = {lab: j for j, lab in enumerate(labels)}
        results = sorted((r for r in results if report.label_of(r) in order),
                         key=lambda r: (order[report.label_of(r)], r["seed"]))
    else:
        results.sort(key=lambda r: r["seed"])  # stable: the learners keep their order within a seed
    family = families.pop()
    first = results[0]
    exp = Experiment(family, str(first.get("protocol", family)), str(first.get("dataset", "")), lambda s, k: [],
                     extra=extra, runs=runs, valid=valid)
    provenance = {"commands": commands, "codes": record_codes(results).split(", "),
                  "merged_by": "metarec " + shlex.join(argv)}
    write_report(Path(out), results, provenance, exp, title)
    return results
