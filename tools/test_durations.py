"""Where the test suite's time goes, per file: `make test-durations` runs the suite as `make test` does, with pytest's
40 slowest phases and a JUnit report, then this prints each file's test time (setup + call + teardown of its tests,
summed; two workers run side by side, so the sum is about twice the wall time) and its number of tests:

    python -m tools.test_durations runs/test-durations.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path


def per_file(junit_xml: Path) -> list[tuple[str, float, int]]:
    """(file, seconds, tests) of each test file in a JUnit report, the slowest first."""
    seconds, tests = Counter(), Counter()
    for case in ElementTree.parse(junit_xml).iter("testcase"):
        name = case.get("classname", "").split(".")
        module = name[1] if len(name) > 1 and name[0] == "tests" else name[0]
        seconds[module] += float(case.get("time") or 0)
        tests[module] += 1
    return [(module, total, tests[module]) for module, total in seconds.most_common()]


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("error: give the JUnit report pytest wrote: python -m tools.test_durations REPORT.xml", file=sys.stderr)
        return 2
    rows = per_file(Path(argv[0]))
    print("| test file | seconds | tests |\n|---|---|---|")
    for module, total, count in rows:
        print(f"| tests/{module}.py | {total:.1f} | {count} |")
    print(f"| all | {sum(total for _, total, _ in rows):.1f} | {sum(count for _, _, count in rows)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
