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


# Incoming-webhook URLs as each provider documents them (values made up): the URL itself is the credential.
PATH_SECRET_URLS = [
    (
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "https://hooks.slack.com/services/***",
        "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    (
        "https://discord.com/api/webhooks/123456789012345678/AbC-dEf_123?wait=true",
        "https://discord.com/api/webhooks/123456789012345678/***?wait=true",
        "AbC-dEf_123",
    ),
    (
        "https://ptb.discordapp.com/api/v10/webhooks/42/tok3n",
        "https://ptb.discordapp.com/api/v10/webhooks/42/***",
        "tok3n",
    ),
    (
        "https://contoso.webhook.office.com/webhookb2/1c0a@72f9/IncomingWebhook/9f1e/8a2b",
        "https://contoso.webhook.office.com/webhookb2/***",
        "1c0a@72f9/IncomingWebhook/9f1e/8a2b",
    ),
    (
        "https://hooks.zapier.com/hooks/catch/123456/abcdef/",
        "https://hooks.zapier.com/hooks/catch/123456/***/",
        "abcdef",
    ),
    ("https://hook.eu1.make.com/abcdefghijklmnop", "https://hook.eu1.make.com/***", "abcdefghijklmnop"),
    (
        "https://api.telegram.org/bot123456:AAH-x_y/sendMessage",
        "https://api.telegram.org/bot123456:***/sendMessage",
        "AAH-x_y",
    ),
]


def test_webhook_urls_that_are_credentials_hide_their_secret_path() -> None:
    for url, shown, secret in PATH_SECRET_URLS:
        assert redact_urls(f"POST {url} failed") == f"POST {shown} failed"
        assert secret in url_secrets(url)


def test_paths_of_ordinary_urls_stay() -> None:
    for url in (
        "https://crm.example/services/T1/B2/c3",
        "https://example.com/api/webhooks/1/2",
        "https://slack.com/help",
    ):
        assert redact_urls(url) == url
        assert url_secrets(url) == ()


def test_a_password_or_token_holding_an_at_sign_is_hidden_whole() -> None:
    """URL parsers split the user info at the last '@' (NATS connects with `nats://u:p@ss@host`), the redaction cut
    at the first and showed the rest: `nats://u:***@ss@host`."""
    assert redact_urls("nats://u:p@ss@n1:4222 up") == "nats://u:***@n1:4222 up"
    assert redact_urls("nats://t0k@en@n1:4222, nats://n2:4222") == "nats://***@n1:4222, nats://n2:4222"
    assert redact_urls("https://crm:hunter2@crm.example/a@b?token=x") == "https://crm:***@crm.example/a@b?token=***"
    assert redact_urls("mail ivan@example.com via smtp://u:p@h:587") == "mail ivan@example.com via smtp://u:***@h:587"


def test_an_at_sign_in_the_query_leaves_the_host_shown() -> None:
    """README's SMTP URL names its sender in the query (`from=shop@example.com`): the user info was taken to run to
    that '@', so `config check` and the log showed `smtp://u:***@example.com&starttls=1`, another host than the one
    mail goes to, and a URL without a password lost its host and port the same way."""
    smtp = "smtp://mailer:pw@mail.example.net:587?starttls=1&from=shop@example.com"
    assert redact_urls(smtp) == "smtp://mailer:***@mail.example.net:587?starttls=1&from=shop@example.com"
    assert (
        redact_urls("smtp://mail.example.net:25?from=shop@example.com")
        == "smtp://mail.example.net:25?from=shop@example.com"
    )
    assert redact_urls("smtp://mail.example.net?from=a@example.com") == "smtp://mail.example.net?from=a@example.com"
    assert (
        redact_urls("smtp://u:p?w#d@mail.example.net:25") == "smtp://u:***@mail.example.net:25"
    )  # unencoded, still hidden
    assert redact_urls("nats://t0k#en@n1:4222") == "nats://***@n1:4222"
