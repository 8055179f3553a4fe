"""Build a workspace's run report and write screenshots of its overview and of one label page.

    .venv/bin/python scripts/report_screenshots.py --workspace demo-workspace [--label star] [--out docs/img]

The pages are opened from disk in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium); the README shows the two PNG files this writes.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_driver(download_dir: str | Path | None = None, width: int = 1280, height: int = 1000):
    """A headless Chromium of the system (never a downloaded one), its console kept for reading, and
    downloads saved to ``download_dir`` without asking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if download_dir is not None:
        opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                               "download.prompt_for_download": False,
                                               "download.directory_upgrade": True})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER), options=opts)
    if download_dir is not None:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def full_page_screenshot(driver, url: str, target: Path, width: int = 1280) -> None:
    """Open ``url`` and save the whole page (its height, capped at 4000 px) as a PNG."""
    driver.set_window_size(width, 600)  # so that the page's height is its content's, not the window's
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(int(height) + 40, 4000))
    target.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(target))


def _label_page(site: Path, label: str | None) -> str:
    """The page of ``label``, or of the label with the most positives."""
    import re
    pages = sorted(site.glob("label-*.html"))
    if not pages:
        raise SystemExit("the report has no label page")
    if label is not None:
        for page in pages:
            if re.search(rf"<h1>Label {re.escape(label)}</h1>", page.read_text(encoding="utf-8")):
                return page.name
        raise SystemExit(f"no label page for {label!r}")
    count = re.compile(r'<dd data-count="positives">(\d+)</dd>')
    return max(pages, key=lambda p: int(count.search(p.read_text(encoding="utf-8")).group(1))).name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspace", "-w", default="workspace", help="the tagged workspace")
    p.add_argument("--run", type=int, help="the run (default: the current one)")
    p.add_argument("--label", help="the label page to capture (default: the one with the most positives)")
    p.add_argument("--max-images", type=int, default=12, help="thumbnails per page")
    p.add_argument("--out", default="docs/img", help="folder of the PNG files")
    args = p.parse_args(argv)

    from tagger.catalog import Catalog
    from tagger.report.site import ReportConfig, build_report
    from tagger.workspace import Workspace

    ws = Workspace(Path(args.workspace).expanduser().resolve())
    with tempfile.TemporaryDirectory() as tmp, \
            Catalog.open(ws.catalog, read_only=True, external_access=False, wait=10) as cat:
        site = Path(tmp) / "report"
        summary = build_report(cat, ws.root, site, run_id=args.run, cfg=ReportConfig(max_images=args.max_images))
        print(f"report: {summary['pages']} pages, {summary['thumbnails']} thumbnails, "
              f"{summary['bytes'] / 1e6:.2f} MB in {summary['seconds']} s")
        driver = chromium_driver()
        try:
            out = Path(args.out)
            full_page_screenshot(driver, (site / "index.html").as_uri(), out / "report-overview.png")
            full_page_screenshot(driver, (site / _label_page(site, args.label)).as_uri(), out / "report-label.png")
        finally:
            driver.quit()
    print(f"wrote {out / 'report-overview.png'} and {out / 'report-label.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
