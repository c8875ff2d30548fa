"""The DSL examples run as a newcomer runs them: `streamkit worker examples.<name>:app
--stop-when-idle 2` from the repository root, on the embedded broker, feeding
themselves sample data and printing their results. (click_count is in test_cli.py.)
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from streamkit.testing import TopologyTestDriver

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str, data_dir: Path) -> tuple[str, str]:
    """Run the example to its end; its stdout and stderr, once it ended cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKIT_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    args = ["worker", f"examples.{name}:app", "--stop-when-idle", "2", "--data-dir"]
    done = subprocess.run(
        [sys.executable, "-m", "streamkit", *args, str(data_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    assert "Traceback" not in done.stderr, report
    assert done.stderr.rstrip().endswith("worker stopped cleanly"), report
    return done.stdout, done.stderr


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py afresh (its app is module state)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_orders_enrichment_joins_customers_and_products(tmp_path: Path) -> None:
    out, _ = run_example("orders_enrichment", tmp_path)
    # Orders of one customer keep their order; o4 (unknown customer) and o5
    # (unknown product) find no partner in an inner join.
    assert sorted(out.splitlines()) == [
        "o1: Ada (gold) bought 1 x monitor for 189.00",
        "o2: Grace (silver) bought 2 x keyboard for 99.00",
        "o3: Linus (bronze) bought 10 x cable for 42.50",
        "o6: Ada (gold) bought 3 x cable for 12.75",
    ], out
    ada = [line for line in out.splitlines() if "Ada" in line]
    assert [line.split(":")[0] for line in ada] == ["o1", "o6"], out


def test_orders_enrichment_topology_through_the_test_kit() -> None:
    """The same graph without timers: an order joins the customer and product as they
    are when it arrives, and a later customer update does not re-emit it."""
    ex = load_example("orders_enrichment")
    with TopologyTestDriver(ex.app) as driver:
        for product in ex.PRODUCTS:
            driver.pipe(ex.products_topic, product.id, product)
        driver.pipe(ex.customers_topic, "c1", ex.CUSTOMERS[0])
        driver.pipe(ex.orders, "c1", ex.ORDERS[0])
        driver.pipe(
            ex.customers_topic, "c1", ex.CUSTOMERS[0].model_copy(update={"tier": "platinum"})
        )
        driver.pipe(ex.orders, "c1", ex.ORDERS[5])
        driver.pipe(ex.orders, "c2", ex.ORDERS[1])  # c2 not known yet: no output
        assert [(k, v.order_id, v.tier, v.total) for k, v in driver.read_output(ex.enriched)] == [
            ("c1", "o1", "gold", 189.0),
            ("c1", "o6", "platinum", 12.75),
        ]


PAGE_VIEW_COUNTS = {
    # page: views in minutes 0, 1, 2, 3 (stragglers within the grace included)
    "/": [3, 4, 5, 2],
    "/docs": [4, 5, 3, 3],
    "/pricing": [4, 3, 4, 4],
    "/blog": [2, 3, 5, 2],
}


def test_page_views_prints_one_final_count_per_page_and_minute(tmp_path: Path) -> None:
    out, log = run_example("page_views", tmp_path)
    seen: dict[str, list[tuple[str, int]]] = {}
    for line in out.splitlines():
        page, window, views, unit = line.split()
        assert unit == "views", out
        seen.setdefault(page, []).append((window.rstrip(":"), int(views)))
    # Each window once, in order per page; minute 5 is still open at the end.
    windows = ["00:00-00:01", "00:01-00:02", "00:02-00:03", "00:03-00:04"]
    assert seen == {p: list(zip(windows, n, strict=True)) for p, n in PAGE_VIEW_COUNTS.items()}
    # The one view that came after its window closed was dropped, and said so.
    assert log.count("dropped a record") == 1 and ": late (1 so far" in log, log


def test_page_views_topology_emits_a_window_once_it_closes() -> None:
    ex = load_example("page_views")
    start = ex.START_MS

    def view(user: str, page: str, seconds: int) -> tuple[str, object, int]:
        return user, ex.PageView(user=user, page=page), start + seconds * 1000

    with TopologyTestDriver(ex.app) as driver:
        driver.pipe_many(ex.views, [view("ada", "/", 10), view("ken", "/", 50)])
        driver.pipe_many(ex.views, [view("ada", "/", 65)])
        assert driver.read_output(ex.counts) == []  # minute 0 is open until 1:10
        driver.pipe_many(ex.views, [view("ken", "/", 58)])  # within the grace: counts
        driver.pipe_many(ex.views, [view("ada", "/", 71)])
        assert driver.read_output(ex.counts) == [
            ("/", ex.WindowCount(window_start=start, window_end=start + 60_000, views=3))
        ]
        driver.pipe_many(ex.views, [view("ken", "/", 59)])  # minute 0 closed: dropped
        driver.pipe_many(ex.views, [view("ada", "/", 200)])
        assert driver.read_output(ex.counts) == [
            ("/", ex.WindowCount(window_start=start + 60_000, window_end=start + 120_000, views=2))
        ]
    assert (
        sum(
            ex.app.metrics.value("dropped_records", node=n.name, reason="late")
            for n in ex.app.graph.nodes
        )
        == 1
    )
