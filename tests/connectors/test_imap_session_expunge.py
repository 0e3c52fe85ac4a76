"""IMAP FETCH against a real Dovecot while another client expunges: messages gone since the search are skipped,
not an error that drops the connection (Dovecot answers `BODY[] NIL` for them, with a tagged OK). And the
`move:` fallback of servers without MOVE and UIDPLUS never expunges messages it did not move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadhub.connectors.imap_config import ImapConfig
from leadhub.connectors.imap_session import ImapSession, PostActionRefused
from tests.imap_server import Dovecot, make_mail, running_dovecot


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    with running_dovecot() as server:
        yield server


def test_messages_expunged_by_another_client_between_size_and_fetch_are_skipped(dovecot: Dovecot) -> None:
    dovecot.append([make_mail(i) for i in range(1, 6)])
    session = ImapSession(ImapConfig.model_validate(dovecot.connector()), "INBOX", None)
    session.open()
    try:
        uids = [1, 2, 3, 4, 5]
        sizes = session.sizes(uids)  # the folder worker sizes a chunk first, then fetches it in groups
        assert sorted(sizes) == uids
        admin = dovecot.client()  # meanwhile a person deletes two of them in their mail client
        admin.select_folder("INBOX")
        admin.delete_messages([2, 3])
        admin.expunge()
        fetched = session.fetch(uids, sizes)
        assert [item.uid for item in fetched] == [1, 4, 5]
        assert all(item.data.startswith(b"From: Customer") for item in fetched)
    finally:
        session.close()


WITHOUT_MOVE_AND_UIDPLUS = "protocol imap {\n  imap_capability = IMAP4rev1 IDLE LITERAL+\n}\n"


def test_move_without_uidplus_never_expunges_other_deleted_messages() -> None:
    with running_dovecot(extra_config=WITHOUT_MOVE_AND_UIDPLUS) as dovecot:
        dovecot.append([make_mail(i) for i in range(1, 6)])
        admin = dovecot.client()
        admin.create_folder("Processed")
        admin.select_folder("INBOX")
        admin.add_flags([4, 5], [b"\\Deleted"])  # marked deleted in a mail client, not expunged (nor read by us)
        session = ImapSession(ImapConfig.model_validate(dovecot.connector(post_action="move:Processed")), "INBOX", None)
        info = session.open()
        try:
            assert not info.move
            with pytest.raises(PostActionRefused, match="not expunged"):
                session.post_action([1, 2], "move:Processed", info.move)  # reported as post_action_error
        finally:
            session.close()
        admin.select_folder("INBOX")
        assert admin.search() == [1, 2, 3, 4, 5]  # nothing expunged: 4 and 5 are still there to be read
        assert admin.folder_status("Processed", [b"MESSAGES"])[b"MESSAGES"] == 2
        # without other deleted mail the fallback completes the move
        admin.select_folder("INBOX")
        admin.remove_flags([1, 2, 4, 5], [b"\\Deleted"])
        session = ImapSession(ImapConfig.model_validate(dovecot.connector(post_action="move:Processed")), "INBOX", None)
        info = session.open()
        try:
            session.post_action([3], "move:Processed", info.move)
        finally:
            session.close()
        admin.select_folder("INBOX")
        assert admin.search() == [1, 2, 4, 5]
