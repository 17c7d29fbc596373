"""The stats page: states, counters, sparklines, and nothing unescaped or external."""
from simpleproxy.balancer import DRAIN, MAINT
from simpleproxy.statspage import stats_page
from stats_support import START, WALL, ReferenceTarget


def test_page_shows_states_sparklines_and_escapes():
    target = ReferenceTarget()
    stats = target.stats
    be = stats.backend("app")
    be.pool.set_health(be.servers[0].state, False)
    be.servers[0].record_check(False, "connection error: <script>alert(1)</script>", 0.002, 0)
    stats.frontends[0].ends["bad-header:malformed"] += 2
    for second in range(1, 31):
        stats.frontends[0].stot += 1
        stats.frontends[0].bin += 100 * second
        stats.tick(START + second)
    page = stats_page(stats, START + 30, WALL + 30, 5)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<td class="DOWN">DOWN</td>' in page and "<h2>listen db</h2>" in page
    assert '<td class="backup">no check</td>' in page
    assert "bad-header:malformed 2" in page
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
