"""Amazon SES's answer to DATA (`250 Ok <id>`) and its SMTP endpoints: which id, under which domain, is the
Message-ID the recipient sees. Pure functions; tests/triggers/test_send_email_ses.py sends through a server."""

from __future__ import annotations

import pytest

from leadhub.triggers.actions.ses import ses_domain, ses_message_id


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("email-smtp.us-east-1.amazonaws.com", "email.amazonses.com"),
        ("email-smtp-fips.us-east-1.amazonaws.com", "email.amazonses.com"),
        ("email-smtp.eu-west-1.amazonaws.com", "eu-west-1.amazonses.com"),
        ("EMAIL-SMTP.EU-CENTRAL-1.AMAZONAWS.COM", "eu-central-1.amazonses.com"),
        ("email-smtp.us-gov-west-1.amazonaws.com", "us-gov-west-1.amazonses.com"),
        ("email-smtp-fips.us-west-2.amazonaws.com", "us-west-2.amazonses.com"),
        # Not an SES SMTP endpoint: nothing is derived.
        ("smtp.example.com", None),
        ("email.us-east-1.amazonaws.com", None),  # SES's API endpoint, not its SMTP one
        ("email-smtp.eu-west-1.amazonaws.com.evil.example", None),
        ("email-smtp.eu-west-1.evil.example", None),
        ("127.0.0.1", None),
    ],
)
def test_the_ses_domain_is_derived_only_from_ses_smtp_endpoints(host: str, domain: str | None) -> None:
    assert ses_domain(host, None) == domain


def test_a_configured_ses_domain_wins() -> None:
    assert ses_domain("127.0.0.1", "email.amazonses.com") == "email.amazonses.com"
    assert ses_domain("email-smtp.eu-west-1.amazonaws.com", "eu-west-1.amazonses.com") == "eu-west-1.amazonses.com"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "Ok 0100018c1f2e3d4c-5b6a7980-1a2b-4c3d-9e8f-0a1b2c3d4e5f-000000",
            "<0100018c1f2e3d4c-5b6a7980-1a2b-4c3d-9e8f-0a1b2c3d4e5f-000000@email.amazonses.com>",
        ),
        (
            "Ok 0000014a0b1c2d3e-4f5a6b7c-8d9e-0f1a-2b3c-4d5e6f7a8b9c-000000\n",
            "<0000014a0b1c2d3e-4f5a6b7c-8d9e-0f1a-2b3c-4d5e6f7a8b9c-000000@email.amazonses.com>",
        ),
        ("Ok", None),  # no id
        ("OK", None),
        ("Ok something something", None),
        ("2.0.0 Ok: queued as 4DkX1h0Lz3z9", None),  # Postfix's answer
        ("Ok <evil>@attacker.example", None),
        ("Ok 0100018c1f2e3d4c" + "-0a1b" * 120, None),  # longer than the Message-ID column holds
    ],
)
def test_only_an_answer_of_ses_s_shape_gives_an_id(reply: str, expected: str | None) -> None:
    assert ses_message_id(reply, "email.amazonses.com") == expected
