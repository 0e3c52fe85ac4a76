"""Credentials in URLs found and hidden for display; the rest of the URL is kept as written."""

from __future__ import annotations

from leadhub.url_redaction import redact_urls, url_secrets


def test_secrets_are_found_as_written_and_decoded_longest_first() -> None:
    url = "https://crm:hunter2@crm.example/hook?api_key=K3Y&lead=42&Access_Token=T%2F0K&sig=&page=2"
    assert url_secrets(url) == ("hunter2", "T%2F0K", "T/0K", "K3Y")
    assert url_secrets("https://TOKEN@crm.example/") == ("TOKEN",)
    assert url_secrets("https://crm.example/leads?name=Ivan") == ()
    assert url_secrets("http://[::1/hook?token=x") == ()  # not a URL urllib can split: nothing to cut


def test_display_keeps_everything_but_the_credentials() -> None:
    url = "https://crm:hunter2@crm.example/hook?api_key=K3Y&lead=42&Access_Token=T%2F0K#top"
    assert redact_urls(url) == "https://crm:***@crm.example/hook?api_key=***&lead=42&Access_Token=***#top"
    assert redact_urls("see https://crm.example/a?x=1&page=2.") == "see https://crm.example/a?x=1&page=2."
