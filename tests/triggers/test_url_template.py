"""The checks on a rendered webhook URL, without a server: scheme, the template's literal host, dot segments."""

from __future__ import annotations

import pytest

from leadhub.triggers.url_template import UnsafeUrl, check_url, literal_origin


def test_the_literal_origin_is_known_only_when_no_template_syntax_is_in_it() -> None:
    assert literal_origin("https://CRM.example:8443/leads/{{ lead.id }}") == ("https", "crm.example", 8443)
    assert literal_origin("http://user:pw@crm.example?{{ x }}") == ("http", "crm.example", None)
    assert literal_origin("https://{{ shop.domain }}/hook") is None
    assert literal_origin("https://crm{{ n }}.example/hook") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://evil.example/leads", "does not go to the host"),
        ("https://crm.example:444/leads", "does not go to the host"),
        ("http://crm.example/leads", "does not go to the host"),
        ("ftp://crm.example/leads", "not http(s)"),
        ("https://crm.example/leads/%2E%2e/x", "'..' path segment"),
        ("https://crm.example/./leads", "'.' or '..' path segment"),
        ("https://crm.example:x/leads?token=SECRET", "not a valid URL"),
    ],
)
def test_a_rendered_url_elsewhere_is_refused_without_quoting_it(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        check_url(url, ("https", "crm.example", None))
    assert message in str(refused.value) and "SECRET" not in str(refused.value)


def test_a_url_at_the_literal_origin_passes_as_rendered() -> None:
    url = "https://user:pw@CRM.example/leads/..%2Fadmin?name=a%26b"
    assert check_url(url, ("https", "crm.example", None)) == url
    assert check_url("https://any.example/x", None) == "https://any.example/x"


@pytest.mark.parametrize("host", ["169.254.169.254", "10.0.0.7", "192.168.1.1", "127.0.0.1", "0.0.0.0", "224.0.0.1"])
def test_a_host_a_value_wrote_may_not_be_a_private_address_literal(host: str) -> None:
    """The cloud's metadata service, the private network, loopback: refused when a value chose the host, and
    still allowed when the rule's url writes it literally (the admin's own receiver)."""
    with pytest.raises(UnsafeUrl, match="not a public address"):
        check_url(f"http://{host}/latest/meta-data", None)
    assert check_url(f"http://{host}/hook", ("http", host, None)) == f"http://{host}/hook"


def test_a_host_a_value_wrote_may_be_public() -> None:
    assert check_url("https://8.8.8.8/hook", None) == "https://8.8.8.8/hook"
    assert check_url("https://crm.example/hook", None) == "https://crm.example/hook"  # names: the resolver checks
