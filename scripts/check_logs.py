"""Fail when a log file holds an unmasked phone number, SMS code or secret (run on the test suite's log).

    python scripts/check_logs.py test-artifacts/pytest.log
"""

from __future__ import annotations

import re
import sys

LEAKS = {
    "phone number": re.compile(r"\+?55\d{10,11}(?!\d)"),
    "SMS code": re.compile(r"(?i)\b(?:c[oó]digo|code)\b\W{1,3}(?:\w+\W{1,3}){0,3}?\d{3}[-\s]?\d{3}(?!\d)"),
    "webhook secret": re.compile(r"whsec_(?!\*)[\w+/=-]{4,}"),
    "API key": re.compile(r"(?<![A-Za-z0-9])cf_(?!\*)[\w-]{16,}"),
}


def main(path: str) -> int:
    found = 0
    with open(path, encoding="utf-8", errors="replace") as log:
        for number, line in enumerate(log, 1):
            for kind, pattern in LEAKS.items():
                if pattern.search(line):
                    found += 1
                    if found <= 20:
                        print(f"{path}:{number}: unmasked {kind}: {line.strip()[:200]}")
    print(f"check_logs: {found} unmasked value(s) in {path}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
