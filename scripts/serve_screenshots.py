"""Screenshots of `tagger serve` over a workspace: a label page with a confidence filter, an image's page,
a search by words and the review queue.

    .venv/bin/python scripts/serve_screenshots.py --workspace WS [--label star] [--query "a star"] [--out docs/img]

Starts ``tagger serve`` on a free loopback port and opens its pages in headless Chromium (the system's
``chromium`` and ``chromium-driver`` through selenium, as scripts/report_screenshots.py drives them).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from report_screenshots import chromium_driver, full_page_screenshot

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workspace", "-w", type=Path, required=True)
    p.add_argument("--label", default="star")
    p.add_argument("--query", default="a star")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    a = p.parse_args(argv)
    proc = subprocess.Popen([sys.executable, "-m", "tagger.cli", "serve", "-w", str(a.workspace), "--port", "0",
                             "--page-size", "12"], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    driver = None
    try:
        url = re.search(r"(http://\S+)", proc.stdout.readline()).group(1).rstrip("/")
        driver = chromium_driver()
        label = quote(a.label, safe="")
        full_page_screenshot(driver, f"{url}/label/{label}?min_conf=0.5", a.out / "serve-label.png")
        first = re.search(r'data-image="(\d+)"', driver.page_source).group(1)
        full_page_screenshot(driver, f"{url}/image/{first}", a.out / "serve-image.png")
        full_page_screenshot(driver, f"{url}/search?q={quote(a.query)}&k=12", a.out / "serve-search.png")
        full_page_screenshot(driver, f"{url}/review", a.out / "serve-review.png")
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    print(f"wrote serve-label.png, serve-image.png, serve-search.png, serve-review.png to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
