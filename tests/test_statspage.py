"""The stats page: states, counters, sparklines, and nothing unescaped or external."""
import re

from simpleproxy.balancer import DRAIN, MAINT
from simpleproxy.stats import SPARK_EVERY, SPARK_SAMPLES
from simpleproxy.statspage import SPARK_HEIGHT, SPARK_WIDTH, human_bytes, sparkline, stats_page
from stats_support import START, WALL, ReferenceTarget


def test_page_shows_states_sparklines_and_escapes():
    target = ReferenceTarget()
    stats = target.stats
    be = stats.backend("app")
    be.pool.set_health(be.servers[0].state, False)
    be.servers[0].record_check(False, "connection error: <script>alert(1)</script>", 0.002, 0)
    stats.frontends[0].ends["bad-header:malformed"] += 2
    stats.frontends[0].ends["connect-refused"] += 1
    for second in range(1, 31):
        stats.frontends[0].stot += 1
        stats.frontends[0].bin += 100 * second
        stats.tick(START + second)
    page = stats_page(stats, START + 30, WALL + 30, 5)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<td class="DOWN">DOWN</td>' in page and "<h2>listen db</h2>" in page
    assert '<td class="backup">no check</td>' in page
    assert '<td class="errors">bad-header:malformed 2<br>connect-refused 1</td>' in page
    assert page.count("<polyline") == 16         # sessions and bytes of 8 rows, 6 samples each
    assert "http" not in page.replace('http-equiv', '')      # nothing loaded from elsewhere


def test_page_without_refresh_and_stopping():
    target = ReferenceTarget(name='a<b>"c"')
    target.stats.stopping = True
    page = stats_page(target.stats, START, WALL, None)
    assert "refresh" not in page and "<b>stopping</b>" in page
    assert "<title>a&lt;b&gt;&quot;c&quot; statistics</title>" in page
    assert '<td class="STOP">STOP</td>' in page


def test_page_colours_drain_and_maint():
    target = ReferenceTarget()
    target.set_server("app", "s1", state=DRAIN)
    target.set_server("app", "s2", state=MAINT)
    page = stats_page(target.stats, START, WALL, 5)
    assert '<td class="DRAIN">DRAIN</td>' in page and '<td class="MAINT">MAINT</td>' in page
    assert ".DRAIN{background:" in page and ".MAINT{background:" in page


def spark_points(svg):
    """The polyline's (x, y) points of a sparkline's SVG."""
    points = re.search(r'<polyline [^>]*points="([^"]*)"', svg).group(1)
    return [tuple(float(n) for n in point.split(",")) for point in points.split()]


def test_sparkline_draws_the_samples_in_order_at_the_right_edge_with_min_max_now():
    svg = sparkline([3, 0, 6, 1], "sessions")
    assert svg.startswith('<svg width="%d" height="%d" ' % (SPARK_WIDTH, SPARK_HEIGHT))
    assert "<title>sessions over the last %d s: min 0, max 6, now 1</title>" % (3 * SPARK_EVERY) in svg
    points = spark_points(svg)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    step = (SPARK_WIDTH - 4) / float(SPARK_SAMPLES - 1)
    assert xs == [round(SPARK_WIDTH - 2 - step * n, 1) for n in (3, 2, 1, 0)]
    assert ys[2] < ys[0] < ys[3] < ys[1] == SPARK_HEIGHT - 2     # higher value, higher point
    assert '<circle cx="%.1f" cy="%.1f"' % points[-1] in svg     # the newest one marked
    assert '<line x1="0" ' in svg                                # the baseline


def test_sparkline_of_bytes_and_without_samples():
    svg = sparkline([1024, 5 * 1024 * 1024, 200], "bytes", human_bytes)
    assert "min 200 B, max 5.0 MiB, now 200 B</title>" in svg
    assert "<polyline" not in sparkline([], "sessions")
    assert "no sample yet" in sparkline([], "sessions")


def test_human_bytes_and_the_exact_count_in_the_title():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 14132782, 3 * 1024 ** 4,
                                     2 * 1024 ** 5)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "13.5 MiB", "3.0 TiB", "2048.0 TiB"]
    target = ReferenceTarget()
    target.stats.frontends[0].bin = 14132782
    page = stats_page(target.stats, START, WALL, 5)
    assert '<td title="14132782 bytes">13.5 MiB</td>' in page
    assert '<th title="current sessions, a sample every %d s, the last 10 minutes">sessions' \
        '</th>' % SPARK_EVERY in page
