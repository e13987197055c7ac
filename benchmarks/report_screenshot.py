"""Open a run's HTML report in a real browser (headless Chromium) and screenshot it.

    .venv/bin/python benchmarks/report_screenshot.py --run .demo/storage/models/ede/<version> \
        --out docs/images/report.png [--figure docs/images/roc.png]

The report is built from what the run stored (`ede.reporting.run.build`), written to a
temporary file and opened from disk by Debian's `chromium` (`apt-get install chromium`)
with no network: what a reviewer sees, images and all, proves the page needs nothing
from outside. `--figure` also saves the page's first figure as its own PNG (the
README shows one). Exits non-zero if the browser is missing or writes no image.
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ede.reporting.run import build

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="published version folder (holds report.json)")
    p.add_argument("--out", required=True, help="screenshot PNG")
    p.add_argument("--figure", help="also save the first figure here")
    p.add_argument("--height", type=int, default=3300, help="page height to capture (px)")
    args = p.parse_args()
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        print("no chromium on PATH: apt-get install chromium", file=sys.stderr)
        return 2
    page = build(args.run)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp, "report.html")
        html.write_text(page)
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--screenshot={out}", f"--window-size=1200,{args.height}",
               "--no-first-run", f"--user-data-dir={tmp}/profile", html.as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    if not out.exists() or out.stat().st_size < 10_000:
        print(f"{out}: no screenshot written", file=sys.stderr)
        return 1
    if args.figure:
        first = re.search(r'src="data:image/png;base64,([^"]+)"', page)
        Path(args.figure).write_bytes(base64.b64decode(first.group(1)))
    print(f"screenshot: {out} ({out.stat().st_size / 1024:.0f} KiB, {browser})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
