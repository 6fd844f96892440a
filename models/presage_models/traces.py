"""Reads the shared traces into per-VM series (fractions of capacity), as presage-traces does."""

import gzip
import os
import re

STEP_S = 300


def planetlab_day(folder):
    """{vm name: cpu series} for one PlanetLab day folder (integer percents per line)."""
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or name.startswith("."):
            continue
        with open(path) as f:
            values = [int(line) / 100.0 for line in f if line.strip()]
        out[name] = values
    return out


def bitbrains_month(folder):
    """{vm name: (start epoch s, cpu series, memory series)}; memory as used / provisioned."""
    out = {}
    for name in sorted(os.listdir(folder)):
        if not (name.endswith(".csv.gz") or name.endswith(".csv")):
            continue
        path = os.path.join(folder, name)
        opener = gzip.open if name.endswith(".gz") else open
        cpu, mem_kb, start, cap_kb = [], [], None, 0.0
        with opener(path, "rt") as f:
            for i, line in enumerate(f):
                if i == 0 and line.startswith("Timestamp") or not line.strip():
                    continue
                v = [float(x) for x in line.split(";")]
                if start is None:
                    start = int(v[0])
                cpu.append(min(max(v[4] / 100.0, 0.0), 1.0))
                mem_kb.append(v[6])
                cap_kb = max(cap_kb, v[5])
        mem = [min(max(m / cap_kb, 0.0), 1.0) for m in mem_kb] if cap_kb > 0 else None
        out[name.replace(".csv.gz", "").replace(".csv", "")] = (start or 0, cpu, mem)
    return out


def month_key(name):
    """(year, month) of a month folder's name (YYYY-M), or None for any other name."""
    m = re.fullmatch(r"(\d{4})-(\d{1,2})", name)
    return (int(m.group(1)), int(m.group(2))) if m and 1 <= int(m.group(2)) <= 12 else None


def month_folders(root):
    """The month folders (YYYY-M) directly under `root`: [(name, path)], oldest first."""
    found = [(name, os.path.join(root, name)) for name in os.listdir(root)
             if month_key(name) and os.path.isdir(os.path.join(root, name))]
    return sorted(found, key=lambda f: month_key(f[0]))

