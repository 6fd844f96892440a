"""presage_models.traces on the agent's demand archive layout (plain Python, no packages):
`python3 -m unittest discover -s models -p 'test_*.py'` (run by the cluster suite)."""

import os
import tempfile
import unittest

from presage_models import traces

HEADER = ("Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\t"
          "Memory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\t"
          "Disk write throughput [KB/s];\tNetwork received throughput [KB/s];\tNetwork transmitted throughput [KB/s]\n")


def row(t, pct, cap_kb, used_kb):
    return f"{t};\t2;\t5200;\t{pct / 100 * 5200};\t{pct};\t{cap_kb};\t{used_kb};\t0;\t0;\t0;\t0\n"


class MonthFolders(unittest.TestCase):
    def test_only_year_month_folders_count_and_they_sort_by_date_not_by_name(self):
        with tempfile.TemporaryDirectory() as d:
            for name in ["2026-10", "2026-9", "2025-12", "2026-13", "notes", "2026-1x"]:
                os.mkdir(os.path.join(d, name))
            open(os.path.join(d, "2026-2"), "w").close()  # a file, not a folder
            self.assertEqual([n for n, _ in traces.month_folders(d)], ["2025-12", "2026-9", "2026-10"])
        self.assertEqual(traces.month_key("1970-1"), (1970, 1))
        self.assertIsNone(traces.month_key("2026-0"))


class ArchiveSegments(unittest.TestCase):
    def test_a_segment_reads_as_a_series_named_by_vm_and_first_step_and_no_memory_means_none(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "web%201.1764547200.csv"), "w") as f:
                f.write(HEADER + row(1764547200, 25.0, 4194304, 1048576) + row(1764547500, 75.0, 4194304, 2097152))
            with open(os.path.join(d, "p.1764547200.csv"), "w") as f:
                f.write(HEADER + row(1764547200, 50.0, 0, 0))
            month = traces.bitbrains_month(d)
        self.assertEqual(sorted(month), ["p.1764547200", "web%201.1764547200"])
        start, cpu, mem = month["web%201.1764547200"]
        self.assertEqual((start, cpu, mem), (1764547200, [0.25, 0.75], [0.25, 0.5]))
        self.assertIsNone(month["p.1764547200"][2], "memory never reported: no memory series")


if __name__ == "__main__":
    unittest.main()
