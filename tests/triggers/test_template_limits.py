"""Admin templates cannot take the daemon's memory or hold its event loop: sizes are checked, loops are timed.

Found by an audit: `{{ "a" * 10**10 }}` in a template got `leadhub rules check` killed by the kernel at 23.5 GB
(Jinja folded the constant while loading), and loops nested over `range(100000)` ran for hours.
"""

from __future__ import annotations

import resource
import signal
import threading
from pathlib import Path

import pytest
from jinja2 import Environment
from jinja2.sandbox import ImmutableSandboxedEnvironment

from leadhub.triggers.loader import load_rules
from leadhub.triggers.sandbox import Scope, TemplateProblem, Templates
from leadhub.triggers.template_limits import MAX_BUILT, TemplateLimit, time_limit
from tests.triggers.test_execution import Engine

SCOPE = Scope(("contact", "lead"))
CONSTANT = [
    '{{ "a" * 10**10 }}',
    "{{ [0] * 10**9 }}",
    "{{ 10 ** 100000 }}",
    '{{ ("x" * 1000) * 1000 }}',
    '{{ ("x" * 60000) + ("x" * 60000) }}',
]
AT_RENDER = [  # the size comes from the data, so only rendering can tell
    "{{ contact.name * 10**9 }}",
    '{{ "%100000000s" % contact.name }}',
    "{{ contact.name|center(10**9) }}",
    "{{ contact.name.ljust(10**9) }}",
    "{{ contact.name.zfill(10**9) }}",
    "{{ contact.name|indent(10**8) }}",
    '{{ (contact.name * 1000)|replace("A", "B" * 1000) }}',
    '{{ (contact.name * 1000).replace("A", "B" * 1000) }}',
    "{{ [contact.name]|batch(10**9, 0)|list }}",
    "{{ [contact.name]|slice(10**9)|list }}",
    '{{ "%100000000s"|format(contact.name) }}',
]
MULTIPLIED = [  # each operator stays within the limit; the text they make is 10 times it (the audit's was 100,000)
    '{{ ([("a" * 1000)] * 1000)|join }}',
    '{{ [("a" * 1000)] * 1000 }}',
    '{{ ("b" * 1000).join(["", ""] * 500) }}',
    '{{ ("b" * 1000).join((["", ""] * 500)|map("lower")) }}',
    '{{ ("a " * 500)|wordwrap(1, wrapstring="b" * 1000) }}',
    '{{ ([("a" * 1000)] * 1000) ~ "" }}',
    '{{ "%s" % ([("a" * 1000)] * 1000,) }}',
    '{{ ([("a" * 1000)] * 1000)|string }}',
    '{{ ([("a" * 1000)] * 1000)|tojson }}',
    '{{ dict(a=[("a" * 1000)] * 1000)|urlencode }}',
    '{% for i in range(10000) %}{{ "a" * 1000 }}{% endfor %}',  # 10 times the whole output's limit
    '{{ (range(2000)|map(attribute="x")|map("default", "a" * 1000)|map("upper")|list)|length }}',  # 2 times it
]
ORDINARY = (
    '{{ "-" * 20 }}|{{ 2 ** 10 }}|{{ "%05d" % 42 }}|{{ contact.name|center(9) }}|{{ "7".zfill(3) }}|'
    '{{ "a-b"|replace("-", "--") }}|{{ contact.name * 2 }}|{{ [1, 2, 3]|batch(2)|list|length }}|'
    "{% for i in range(3) %}{{ i }}{% endfor %}|"
    '{{ [1, 2]|join(", ") }}|{{ "-".join(["a", "b"]|map("upper")) }}|{{ "a b c"|wordwrap(1, wrapstring="/") }}|'
    '{{ [1, "b"] }}|{{ "a" ~ 1 }}|{{ "%s-%s" % (1, 2) }}|{{ [1]|string }}'
)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("source", CONSTANT)
def test_a_constant_past_the_limits_is_a_problem_when_the_rules_load(source: str) -> None:
    before = _peak_rss_mib()
    with pytest.raises(TemplateProblem, match="the limit is"):
        Templates().inline(source, SCOPE)
    assert _peak_rss_mib() - before < 50, "the check must refuse before building anything"


@pytest.mark.parametrize("source", AT_RENDER)
def test_a_size_from_the_data_past_the_limits_stops_the_render(source: str) -> None:
    template = Templates().inline(source, SCOPE)
    before = _peak_rss_mib()
    with pytest.raises(TemplateLimit, match=f"the limit is {MAX_BUILT:,}"):
        template.render(contact={"name": "Anna"}, lead={})
    assert _peak_rss_mib() - before < 50


def test_ordinary_templates_are_untouched() -> None:
    text = Templates().inline(ORDINARY, SCOPE).render(contact={"name": "Anna"}, lead={})
    assert text == (
        "--------------------|1024|00042|   Anna  |007|a--b|AnnaAnna|2|012|1, 2|A-B|a/b/c|[1, 'b']|a1|1-2|[1]"
    )


@pytest.mark.parametrize("source", MULTIPLIED)
def test_text_made_from_a_repeated_value_is_counted_before_it_is_made(source: str) -> None:
    template = Templates().inline(source, SCOPE)
    with pytest.raises(TemplateLimit, match="the limit is"):
        template.render(contact={"name": "Anna"}, lead={})


GROWN_FROM_OPERANDS = [  # found by an audit: each built up to 2 billion characters in C, where no alarm reaches
    '{{ ("%(a)s" * 20000) % {"a": "x" * 99000} }}',  # one argument, converted 20,000 times
    '{{ ("%(a)s" * 20000)|format(a="x" * 99000) }}',
    '{{ ("%(name)s" * 100) % {"name": contact.name * 1000} }}',  # 400,000 characters
    '{{ ("%s" * 100) % ((contact.name * 1000,) * 100) }}',
    '{{ "%r%r" % ("\\x00" * 20000, "\\x00" * 20000) }}',  # 40,000 characters, but each is written as 4
    '{{ ("%(a)s" * 100).encode() % {"a".encode(): (contact.name * 1000).encode()} }}',
    '{{ "%(a(b))100000000s" % {"a(b)": contact.name} }}',  # a key Python reads, with a width the pattern missed
    '{{ "a".encode() * 300000000 }}',  # bytes: as str
    "{{ contact.name.encode().ljust(300000000) }}",
    "{{ contact.name.encode().zfill(10**9) }}",
    '{{ (contact.name * 1000).encode().replace("A".encode(), ("B" * 1000).encode()) }}',
    '{{ ("x" * 3000).translate({120: "y" * 99000}) }}',  # each character can become a long string
    '{{ (contact.name * 1000).translate({65: "y" * 1000}) }}',
    '{{ (contact.name * 1000).translate(["y" * 1000] * 100) }}',
    '{% set s = "x" * 100000 %}' + "{% set s = s ~ s %}" * 10 + "{{ s|length }}",  # doubled at each step
    '{% set s = "x" * 100000 %}' + "{% set s = s + s %}" * 10 + "{{ s|length }}",
    "{% set s = contact.name * 20000 %}{{ (s ~ s)|length }}",  # 160,000 characters
    "{% set s = contact.name * 20000 %}{{ (s + s)|length }}",
    "{% set s = [contact.name] * 60000 %}{{ (s + s)|length }}",  # 120,000 items
    '{{ ("https://example.com " * 1000)|urlize(target="x" * 99000) }}',  # `target` written into each link
    '{{ ("https://example.com " * 1000)|urlize(rel="x" * 99000) }}',
    '{{ ([("a" * 99000)] * 1000)|format }}',  # the list was made text before it was counted
]


@pytest.mark.parametrize("source", GROWN_FROM_OPERANDS)
def test_a_result_grown_from_its_operands_is_bounded_before_it_is_built(source: str) -> None:
    template = Templates().inline(source, SCOPE)
    before = _peak_rss_mib()
    with pytest.raises(TemplateLimit, match=f"the limit is {MAX_BUILT:,}|not supported"):
        template.render(contact={"name": "Anna"}, lead={})
    assert _peak_rss_mib() - before < 50


WITHIN_BOUNDS = [  # what the bounds above must not change
    '{{ "%s-%s" % (1, 2) }}|{{ "%(a)s/%(b)05.1f" % {"a": "x", "b": 2.5} }}|{{ "100%% %s" % contact.name }}',
    '{{ "%r %a %c" % ("\u00fc", "\u00fc", 65) }}|{{ "%s" % [1, "b"] }}|{{ "%(name)s" % contact }}',
    '{{ "%d %#x %.2e %f" % (1e20, 255, 1.5, 1e300) }}|{{ "%%100000000s" % () }}|{{ "%-6s|" % "ab" }}',
    '{{ "%s!"|format(contact.name) }}|{{ "%(n)03d"|format(n=7) }}|{{ ("%s" * 10000) % ((1,) * 10000) }}',
    '{{ "%(name)s" % {"name": contact.name * 20000} }}',  # 80,000 characters from one conversion
    '{{ "a".encode() * 3 }}|{{ "a".encode().ljust(3, "-".encode()) }}|{{ "a\tb".encode().expandtabs(4) }}',
    '{{ "ab".translate({97: "xy", 98: none}) }}|{{ "ab".translate("xyz") }}|{{ "ab".translate(["-"] * 98) }}',
    '{{ (contact.name * 10000).translate({65: "&amp;"})|length }}',  # 10,000 of 40,000 characters grow
    '{{ "a" ~ 1 ~ none ~ [1] ~ contact.name }}|{{ contact.name + "!" }}|{{ [1] + [2] }}|{{ 1 + 2.5 }}',
    "{{ (1,) + (2,) }}|{{ contact.name ~ contact.name }}",
    '{{ ("see https://example.com/a. or b@example.com " * 1000)|urlize(target="top")|length }}',
    "{% set s = contact.name * 20000 %}{{ (s ~ s[:10000])|length }}|{{ (s + s[:10000])|length }}",
]


@pytest.mark.parametrize("html", [False, True])
@pytest.mark.parametrize("source", WITHIN_BOUNDS)
def test_operators_within_the_bounds_give_what_jinja_gives(source: str, html: bool) -> None:
    values = {"contact": {"name": "<An>"}, "lead": {}}  # as long as "Anna", and escaped in HTML
    ours = Templates().inline(source, SCOPE, html=html).render(**values)
    assert ours == ImmutableSandboxedEnvironment(autoescape=html).from_string(source).render(**values)


@pytest.mark.parametrize("html", [False, True])
def test_join_and_wordwrap_give_what_jinja_gives(html: bool) -> None:
    text = "one two-three\n\nfour  five\tsix\nseven"
    source = (
        '{{ t|wordwrap(3) }}|{{ t|wordwrap(4, false, "<br>", false) }}|{{ xs|join(", ") }}|{{ ys|join(attribute="n") }}'
    )
    values = {"t": text, "xs": ["<a>", 1, None], "ys": [{"n": "x"}, {"n": "<y>"}]}
    ours = Templates().inline(source, Scope(("t", "xs", "ys")), html=html).render(**values)
    assert ours == Environment(autoescape=html).from_string(source).render(**values)


def test_a_condition_with_a_huge_constant_is_a_problem() -> None:
    with pytest.raises(TemplateProblem, match="'\\*' would build 10,000,000,000"):
        Templates().expression("('x' * 10**10) != ''", SCOPE)
    condition = Templates().expression("(contact.name * 10**9)|length > 0", SCOPE)
    with pytest.raises(TemplateLimit):
        condition(contact={"name": "Anna"}, lead={})
    condition = Templates().expression('([("a" * 1000)] * 1000)|join|length > 0', SCOPE)
    with pytest.raises(TemplateLimit, match="the limit is"):
        condition(contact={"name": "Anna"}, lead={})


SLOW = '([("a" * 99999) ~ "b", ("a" * 99999) ~ "b"] * 50000)|sort|length'  # no loop; equal strings compared in full


def test_a_template_or_condition_without_loops_is_stopped_by_the_time_limit() -> None:
    template = Templates().inline("{{ " + SLOW + " }}", SCOPE)
    with pytest.raises(TemplateLimit, match="ran longer than 1 s"):
        template.render(contact={}, lead={})
    condition = Templates().expression(f"{SLOW} > 0", SCOPE)
    with pytest.raises(TemplateLimit, match="ran longer than 1 s"):
        condition(contact={}, lead={})


def test_nested_loops_are_stopped_by_the_time_limit() -> None:
    source = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}done"
    template = Templates().inline(source, SCOPE)
    handler, (timer, _) = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    with pytest.raises(TemplateLimit, match="ran longer than 1 s"):
        template.render(contact={}, lead={})
    assert signal.getsignal(signal.SIGALRM) is handler, "the previous handler (pytest-timeout's, if any) is back"
    if timer:  # pytest-timeout's own timer runs on with what was left of it
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] < timer
    else:
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert Templates().inline("{% for i in range(3) %}{{ i }}{% endfor %}", SCOPE).render() == "012"


def test_the_time_limit_leaves_other_threads_and_timers_alone() -> None:
    outcome: list[str] = []

    def in_a_thread() -> None:
        with time_limit(0.01):
            outcome.append("ran")  # no SIGALRM off the main thread; nothing to interrupt here

    worker = threading.Thread(target=in_a_thread)
    worker.start()
    worker.join()
    assert outcome == ["ran"]


def test_rules_check_reports_a_huge_constant_in_a_template_file(tmp_path: Path) -> None:
    (tmp_path / "templates" / "email").mkdir(parents=True)
    (tmp_path / "templates" / "email" / "hello.txt").write_text('{{ "a" * 10**10 }}\n')
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(
        "rules:\n  - id: hello\n    on: lead.created\n    do:\n"
        "      - send_email: {template: hello, to: x@example.com}\n"
    )
    result = load_rules(tmp_path / "rules", Templates(tmp_path / "templates"))
    assert result.rules == [] and len(result.problems) == 1
    assert "'*' would build 10,000,000,000 characters or items" in str(result.problems[0])


async def test_a_runaway_template_fails_its_action_and_the_next_one_runs(engine, tmp_path: Path) -> None:
    rules = """
rules:
  - id: r
    on: lead.created
    do:
      - create_task: {title: "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x"}
      - create_task: {title: "call {{ contact.name }}"}
"""
    e = Engine(engine, tmp_path, rules)
    contact_id, lead_id = await e.shop.customer()
    await e.lead_event(lead_id, contact_id)
    assert await e.scheduler().run_once() == 2
    statuses = sorted((row.status, row.last_error or "") for row in await e.shop.actions())
    assert [status for status, _ in statuses] == ["done", "failed"], statuses
    assert statuses[1][1].startswith("rendering failed: TemplateLimit: the template ran longer than 1 s"), statuses
