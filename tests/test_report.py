"""`simcost report`: one self-contained HTML page from a run or a sweep folder.

The numbers in its tables are summary.json's (to the digits shown); sections whose data is
missing are left out; bad folders are InputErrors naming the file; and headless Chromium loads
the page with every figure decoded, nothing fetched and nothing overflowing the window.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from scenarios import BASE, merge, scenario

from simcost.analysis.frontier import frontier
from simcost.analysis.report import render, write_report
from simcost.analysis.report_read import read_measured_latencies
from simcost.analysis.report_run import CATEGORY_LABELS, latency_section
from simcost.cli.main import main
from simcost.errors import InputError
from simcost.results.writer import write_run
from simcost.simulation.simulation import run

NAME = 'tiny <i>"mix"</i> & co'  # every string from a file is escaped: this one must come out as text
TINY = {"name": NAME, "duration_s": 20.0, "warmup_s": 4.0, "slo": {"ttft_s": 0.5, "tpot_s": 0.05},
        "workload": {"mix": [
            {"name": "chat", "tenant": "consumer", "arrivals": {"process": "poisson", "rate_per_s": 3.0},
             "input_tokens": {"dist": "uniform", "low": 50, "high": 800},
             "output_tokens": {"dist": "uniform", "low": 1, "high": 120}},
            {"name": "code", "tenant": "devtools", "arrivals": {"process": "poisson", "rate_per_s": 2.0},
             "input_tokens": {"dist": "uniform", "low": 500, "high": 2000},
             "output_tokens": {"dist": "uniform", "low": 1, "high": 60}}]}}
RUN_SECTIONS = {"scenario": "Scenario", "headline": "Headline", "latency-cdfs": "Latency distributions",
                "timeseries": "Fleet over time", "cost": "Cost", "by-tenant": "By tenant", "by-workload": "By workload",
                "unit-economics": "Unit economics"}
SWEEP_SECTIONS = {"sweep": "Sweep", "sweep-table": "Sweep results", "frontier": "Latency-versus-spend frontier",
                  "sweep-latency": "Latency distributions by point", "sweep-cost": "Cost by run"}


@pytest.fixture(scope="module")
def tiny_run():
    return run(scenario(**TINY))


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    write_run(tiny_run, out)
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("report-sweep")
    path = base / "tiny.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"name": "tiny-sweep", "duration_s": 15.0, "warmup_s": 3.0,
                                                "slo": {"ttft_s": 0.5}})))
    out = base / "sweep"
    assert main(["sweep", str(path), "--param", "fleet.replicas", "--values", "1,2", "--out", str(out), "--jobs", "1"]) == 0
    return out


@pytest.fixture(scope="module")
def run_html(run_dir) -> str:
    return render(run_dir)


@pytest.fixture(scope="module")
def sweep_html(sweep_dir) -> str:
    return render(sweep_dir)


# --- reading the page back --------------------------------------------------------------------

class Page(HTMLParser):
    """Sections (by id) with their h2 title, tables (rows of cell texts) and image sources."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, dict] = {}
        self.images: list[dict] = []
        self.scripts = 0
        self.meta: list[dict] = []
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value) of every start tag
        self._section = self._cell = self._row = None
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs += [(tag, name, value or "") for name, value in attrs] or [(tag, "", "")]
        if tag == "section":
            self._section = self.sections.setdefault(a["id"], {"title": "", "tables": [], "images": [], "text": ""})
        elif tag == "h2":
            self._in_h2 = True
        elif tag == "table" and self._section is not None:
            self._section["tables"].append([])
        elif tag == "tr" and self._section is not None:
            self._row = []
            self._section["tables"][-1].append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
            if self._section is not None:
                self._section["images"].append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag == "meta":
            self.meta.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self._section["text"] += data
            if self._in_h2:
                self._section["title"] += data


def rows_by_label(table: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table}


def number(text: str) -> tuple[float, float]:
    """A shown number and half its last digit (the rounding it may carry): '$1,234.50' -> (1234.5, 0.005)."""
    clean = text.replace("$", "").replace(",", "").replace("%", "")
    decimals = len(clean.split(".")[1]) if "." in clean else 0
    scale = 100 if text.endswith("%") else 1
    return float(clean) / scale, 0.5 * 10.0 ** -decimals / scale * (1 + 1e-9)


def assert_shows(text: str, value: float, scale: float = 1.0):
    shown, tolerance = number(text)
    assert abs(shown - value * scale) <= tolerance, (text, value * scale)


# --- a run folder -----------------------------------------------------------------------------

def test_run_report_has_every_section_and_escapes_file_text(run_html):
    html = run_html
    page = Page(html)
    assert {k: v["title"] for k, v in page.sections.items()} == RUN_SECTIONS
    assert page.scripts == 0  # no JavaScript at all
    assert NAME not in html and "&lt;i&gt;" in html  # the scenario name came out as text
    assert rows_by_label(page.sections["scenario"]["tables"][0])["scenario"] == [NAME]


def test_headline_numbers_are_the_summarys(run_dir, run_html):
    s = json.loads((run_dir / "summary.json").read_text())
    tables = Page(run_html).sections["headline"]["tables"]
    latency, rates = rows_by_label(tables[0]), rows_by_label(tables[1])
    assert latency["latency (ms)"] == ["mean", "p50", "p90", "p95", "p99"]
    for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        for text, stat in zip(latency[key.removesuffix("_s").upper()], ("mean", "p50", "p90", "p95", "p99")):
            assert_shows(text, s[key][stat], 1e3)
    assert_shows(rates["requests/s"][0], s["throughput"]["requests_per_s"])
    assert_shows(rates["output tokens/s"][0], s["throughput"]["output_tokens_per_s"])
    assert_shows(rates["goodput (requests/s within SLO)"][0], s["goodput_requests_per_s"])
    assert_shows(rates["SLO attainment"][0], s["slo_attainment"])
    assert_shows(rates["utilization"][0], s["utilization"])


def test_cost_tables_add_up_to_the_bill(run_dir, run_html):
    s = json.loads((run_dir / "summary.json").read_text())
    c = s["cost"]
    sections = Page(run_html).sections
    categories = rows_by_label(sections["cost"]["tables"][0][1:])  # after the header
    assert list(categories)[-1] == "bill"
    assert len(categories) - 1 == len(c["by_category"])  # every category shown, zero ones too
    for key, value in c["by_category"].items():
        assert_shows(categories[CATEGORY_LABELS.get(key, key.replace("_", " "))][0], value)
    assert_shows(categories["bill"][0], c["total_usd"])
    assert sum(c["by_category"].values()) == pytest.approx(c["total_usd"], rel=1e-9)
    tenants = rows_by_label(sections["by-tenant"]["tables"][0])
    head = tenants.pop("tenant")
    total = head.index("total $")
    for name, g in s["by_tenant"].items():
        assert_shows(tenants[name][total], g["total_usd"])
        assert tenants[name][:3] == [f"{g['arrived']:,}", f"{g['completed']:,}", f"{g['rejected']:,}"]
    assert_shows(tenants["bill"][total], c["total_usd"])
    left = c["allocation"]["unallocated_left_usd"]  # showback: idle and minimum charges are a line of their own
    assert left > 0 and sum(g["total_usd"] for g in s["by_tenant"].values()) + left == pytest.approx(c["total_usd"])
    assert_shows(tenants["(unallocated)"][total], left)
    unit = rows_by_label(sections["unit-economics"]["tables"][0])
    assert_shows(unit["$ per request"][0], c["usd_per_request"])
    assert_shows(unit["$ per 1M input tokens"][0], c["usd_per_1m_input_tokens"])
    assert_shows(unit["$ per 1M output tokens"][0], c["usd_per_1m_output_tokens"])
    assert_shows(unit["fleet $/month (730 h)"][0], c["usd_per_hour"] * 730)
    assert_shows(unit["kWh per 1k requests"][0], s["energy"]["kwh_per_1k_requests"])


def test_fleet_over_time_is_the_static_fleet(run_dir, run_html):
    """A static fleet: every sample has the summary's replicas at its $/hour."""
    s = json.loads((run_dir / "summary.json").read_text())
    fleet = rows_by_label(Page(run_html).sections["timeseries"]["tables"][0])
    assert fleet["replicas"] == [str(s["replicas"]), f"{s['replicas']:.2f}", str(s["replicas"])]
    for shown in fleet["$/hour"]:
        assert_shows(shown, s["cost"]["usd_per_hour"])


@pytest.mark.parametrize("with_scenario", [True, False])
def test_cdfs_use_exactly_the_measured_requests(run_dir, run_html, with_scenario):
    """From requests.csv the report finds the summary's measured set: its p99 TTFT and count are
    the summary's, with the warm-up from scenario.yaml or, without it, from the measured count."""
    s = json.loads((run_dir / "summary.json").read_text())
    warmup_s = yaml.safe_load((run_dir / "scenario.yaml").read_text())["warmup_s"] if with_scenario else None
    lat = read_measured_latencies(run_dir / "requests.csv", warmup_s, s["requests"]["measured"])
    assert 0 < len(lat["ttft_s"]) == s["requests"]["measured"] < s["requests"]["completed"]  # the warm-up cut some
    for key in ("ttft_s", "tpot_s", "e2el_s"):
        assert np.percentile(lat[key][~np.isnan(lat[key])], 99) == pytest.approx(s[key]["p99"], rel=1e-12)
    caption = Page(run_html).sections["latency-cdfs"]["text"]
    assert f"{s['requests']['measured']:,} measured requests" in caption


def test_parquet_records_give_the_same_cdfs_or_a_note_without_pyarrow(tiny_run, run_dir, run_html, tmp_path,
                                                                        monkeypatch):
    pytest.importorskip("pyarrow")
    folder = tmp_path / "pq"
    write_run(tiny_run, folder, "parquet")
    assert not (folder / "requests.csv").exists()
    s = json.loads((folder / "summary.json").read_text())
    from_parquet = read_measured_latencies(folder / "requests.parquet", 4.0, s["requests"]["measured"])
    from_csv = read_measured_latencies(run_dir / "requests.csv", 4.0, s["requests"]["measured"])
    for key, values in from_csv.items():
        np.testing.assert_array_equal(from_parquet[key], values)
    shown = Page(latency_section(folder, s, None)).sections["latency-cdfs"]
    assert len(shown["images"]) == 1 and f"From requests.parquet: {len(from_csv['ttft_s']):,} measured" in shown["text"]
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    shown = Page(latency_section(folder, s, None)).sections["latency-cdfs"]
    assert shown["images"] == [] and "requests.parquet needs pyarrow" in shown["text"]


def test_missing_optional_files_and_keys_omit_their_sections(run_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    s = json.loads((run_dir / "summary.json").read_text())
    for key in ("energy", "by_tenant", "by_workload"):
        s.pop(key)
    (bare / "summary.json").write_text(json.dumps(s))  # no requests.csv, timeseries.csv, scenario.yaml
    html = render(bare)
    page = Page(html)
    assert set(page.sections) == {"scenario", "headline", "cost", "unit-economics"}
    assert "<img" not in html and page.images == []
    unit = rows_by_label(page.sections["unit-economics"]["tables"][0])
    assert "kWh per 1k requests" not in unit and "$ per request" in unit
    assert "workload" not in rows_by_label(page.sections["scenario"]["tables"][0])  # that came from scenario.yaml


def test_every_figure_is_an_embedded_png_and_nothing_is_fetched(run_html):
    html = run_html
    page = Page(html)
    assert len(page.images) == 2  # latency CDFs, fleet over time
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    loads = [(tag, name, value) for tag, name, value in page.attrs if name in ("src", "href", "action", "srcset", "poster")]
    assert loads and all(value.startswith("data:image/png;base64,") for _, _, value in loads)  # only data: sources
    assert not any(tag in ("link", "iframe", "object", "embed", "base") for tag, _, _ in page.attrs)
    assert "url(" not in html and "@import" not in html
    csp = [m["content"] for m in page.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]


def test_bad_folders_are_input_errors(run_dir, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        render(tmp_path / "nowhere")
    with pytest.raises(InputError, match="neither summary.json .* nor sweep.json"):
        render(tmp_path)
    (tmp_path / "summary.json").write_text('{"scenario": "x",\n  "seed": }\n')
    with pytest.raises(InputError, match=r"summary\.json:2: malformed JSON"):
        render(tmp_path)
    (tmp_path / "summary.json").write_text('{"scenario": "x"}')
    with pytest.raises(InputError, match=r"summary\.json: missing key 'seed'"):
        render(tmp_path)
    odd = json.loads((run_dir / "summary.json").read_text())
    odd["requests"]["arrived"] = "many"
    (tmp_path / "summary.json").write_text(json.dumps(odd))
    with pytest.raises(InputError, match=r"summary\.json: unexpected content \(ValueError"):
        render(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        render(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "requests.csv").write_text("request_id,arrival_s,status\n0,0.0,completed\n")
    with pytest.raises(InputError, match=r"requests\.csv: missing column\(s\) ttft_s, tpot_s, e2el_s"):
        render(broken)
    (broken / "sweep.json").write_text('{"not": "rows"}')  # a sweep.json makes it a sweep folder
    with pytest.raises(InputError, match=r"sweep\.json: expected a JSON list of rows"):
        render(broken)


def test_cli_writes_the_report_or_one_error_line(run_dir, run_html, tmp_path, capsys):
    out = tmp_path / "deep" / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == run_html  # the same folder gives the same page
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simcost: error: ") and "no such folder" in err[0]


# --- a sweep folder ---------------------------------------------------------------------------

def test_sweep_report_tables_and_frontier(sweep_dir, sweep_html):
    rows = json.loads((sweep_dir / "sweep.json").read_text())
    page = Page(sweep_html)
    assert {k: v["title"] for k, v in page.sections.items()} == SWEEP_SECTIONS
    table = page.sections["sweep-table"]["tables"][0]
    head, body = table[0], table[1:]
    assert head[0] == "fleet.replicas" and [r[0] for r in body] == [str(r["fleet.replicas"]) for r in rows]
    for shown, row in zip(body, rows):
        assert_shows(shown[head.index("p99 TTFT (ms)")], row["p99_ttft_s"], 1e3)
        assert_shows(shown[head.index("$/hour")], row["usd_per_hour"])
    on = frontier(rows, "p99_ttft_s", "usd_per_hour")
    listed = page.sections["frontier"]["tables"][0][1:]
    assert [r[0] for r in listed] == [str(r["fleet.replicas"]) for r in on]
    costs = page.sections["sweep-cost"]["tables"][0][1:]
    assert [r[0] for r in costs] == [r["run_dir"] for r in rows]  # one run folder per point (one seed)
    assert len(page.images) == 2  # frontier, CDFs by point


def test_sweep_report_shows_a_failed_point_and_keeps_it_off_the_frontier(sweep_dir, tmp_path):
    folder = tmp_path / "sweep"
    shutil.copytree(sweep_dir, folder)
    rows = json.loads((folder / "sweep.json").read_text())
    failed = {**{k: None for k in rows[0]}, "fleet.replicas": 3, "status": "error",
              "error": "fleet.replicas: <boom> & bust", "run_dir": ""}
    (folder / "sweep.json").write_text(json.dumps(rows + [failed]))
    html = render(folder)
    page = Page(html)
    table = page.sections["sweep-table"]["tables"][0]
    assert table[-1][0] == "3" and table[-1][-1] == "fleet.replicas: <boom> & bust"  # read back as text
    assert "&lt;boom&gt; &amp; bust" in html
    assert "3" not in [r[0] for r in page.sections["frontier"]["tables"][0][1:]]
    assert rows_by_label(page.sections["sweep"]["tables"][0])["points"] == ["3, 1 failed"]


def test_sweep_folder_without_run_folders_omits_their_sections(sweep_dir, tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    shutil.copy(sweep_dir / "sweep.json", folder / "sweep.json")
    page = Page(render(folder))
    assert set(page.sections) == {"sweep", "sweep-table", "frontier"}


# --- in a browser -----------------------------------------------------------------------------

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install "
                                                              "chromium); the browser check of the report is skipped")
# Test-only probe, put before the page's own CSP so it may run: after load it writes each image's
# decoded size, the page's width, script errors and blocked loads into the DOM chromium dumps.
PROBE = """<script>
const seen = {errors: [], blocked: []};
addEventListener("error", e => seen.errors.push(String(e.message)));
document.addEventListener("securitypolicyviolation", e => seen.blocked.push(e.blockedURI));
addEventListener("load", () => {
  for (const img of document.images) { img.dataset.w = img.naturalWidth; img.dataset.h = img.naturalHeight; }
  const d = document.documentElement;
  d.dataset.scrollWidth = d.scrollWidth; d.dataset.innerWidth = innerWidth;
  d.dataset.seen = JSON.stringify(seen);
});
</script>"""
OUTSIDE = '<img id="outside" alt="" src="http://127.0.0.1:9/x.png">'  # the CSP must block this


def dump_dom(path: Path, tmp_path: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,2000",
           "--virtual-time-budget=5000", "--dump-dom", path.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_size(src: str) -> tuple[int, int]:
    png = base64.b64decode(src.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])  # IHDR width, height


@needs_chromium
@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_chromium_renders_every_table_and_figure(kind, run_html, sweep_html, tmp_path):
    html, sections = (run_html, RUN_SECTIONS) if kind == "run" else (sweep_html, SWEEP_SECTIONS)
    report = tmp_path / "report.html"
    report.write_text(html, encoding="utf-8")
    page = Page(dump_dom(report, tmp_path))  # the page as the browser built it
    assert {k: v["title"] for k, v in page.sections.items()} == sections
    assert all(s["tables"] and all(len(t) >= 2 for t in s["tables"]) for k, s in page.sections.items()
               if k not in ("latency-cdfs", "sweep-latency"))  # every table has a header and rows
    assert len(page.images) == 2 and page.scripts == 0  # run: CDFs, fleet; sweep: frontier, CDFs by point

    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("<head>", "<head>" + PROBE, 1).replace("</body>", OUTSIDE + "</body>", 1),
                     encoding="utf-8")
    dom = dump_dom(probe, tmp_path)
    seen = Page(dom)
    figures = [img for img in seen.images if img.get("id") != "outside"]
    assert len(figures) == len(page.images)
    for img in figures:  # decoded by the browser, at the PNG's own size
        assert (int(img["data-w"]), int(img["data-h"])) == png_size(img["src"])
    root = re.search(r"<html[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', root))
    assert int(attrs["scroll-width"]) <= int(attrs["inner-width"])  # wide tables scroll in place, the page does not
    state = json.loads(attrs["seen"].replace("&quot;", '"'))
    assert state["errors"] == []
    assert state["blocked"] == ["http://127.0.0.1:9/x.png"]  # the page's CSP forbids any load from outside
    assert next(img for img in seen.images if img.get("id") == "outside")["data-w"] == "0"


def test_an_unwritable_report_path_is_an_input_error(run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InputError) as err:
        write_report(run_dir, blocker / "report.html")
    assert err.value.where == "--out" and "cannot write" in err.value.problem
