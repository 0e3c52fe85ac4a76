"""Parse step for `telegram` envelopes: messages, shared contacts, edits and button presses become chat inquiries."""

from __future__ import annotations

from typing import Any

from leadhub.envelope import Envelope
from leadhub.json_errors import JSON_ERRORS, json_error_text, loads
from leadhub.pipelines.calls import CALLBACK_TAG, pbx_number
from leadhub.pipelines.email_phones import find_phones
from leadhub.pipelines.errors import PermanentError
from leadhub.pipelines.model import Identity, InquiryDraft

MESSAGES = ("message", "edited_message", "business_message", "edited_business_message")
BUSINESS = ("business_message", "edited_business_message")
IGNORED = (
    "channel_post",
    "edited_channel_post",
    "inline_query",
    "chosen_inline_result",
    "shipping_query",
    "pre_checkout_query",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "message_reaction",
    "message_reaction_count",
)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _name(person: dict[str, Any]) -> str | None:
    parts = [_str(person.get("first_name")), _str(person.get("last_name"))]
    return " ".join(p for p in parts if p) or None


def _phones_in_text(text: str | None, region: str | None) -> list[str]:
    """Numbers written in the message, kept on the inquiry (`fields.phones`) for a person to read; never an
    identifier: "call my wife at ..." or a forwarded text names someone else. Read as in an e-mail's text, national
    forms in the hub's default region too (`8 (916) 123-45-67`): only international ones (`+7 ...`) were found."""
    return find_phones(text[:2000], region)[:10] if text else []


def _sender_fields(user: dict[str, Any], chat: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(user.get("id"), int):
        fields["messenger_id"] = f"telegram:{user['id']}"
    if username := _str(user.get("username")):
        fields["telegram_username"] = username
    if isinstance(chat.get("id"), int):
        fields["telegram_chat_id"] = chat["id"]
    return fields


def _outgoing(kind: str, message: dict[str, Any]) -> bool:
    """A business account's own message to its customer: the owner's or an employee's, or its bot's auto-reply.

    A connected business account delivers both sides of its private chats; `chat` is always the customer's chat
    (its id is the customer's user id), `from` is whoever wrote, and `sender_business_bot` is set only on
    messages a bot sent on the account's behalf.
    """
    if kind not in BUSINESS:
        return False
    if isinstance(message.get("sender_business_bot"), dict):
        return True
    user, chat = _dict(message.get("from")), _dict(message.get("chat"))
    sender, customer = user.get("id"), chat.get("id")
    known = isinstance(sender, int) and isinstance(customer, int)
    return chat.get("type") == "private" and known and sender != customer


def _reply(envelope: Envelope, kind: str, message: dict[str, Any]) -> InquiryDraft:
    """An outgoing business message is history on the customer's contact, like an outbound call: never a lead,
    and nothing in it (the name, a phone in the text, a shared card) is the customer's."""
    user, chat = _dict(message.get("from")), _dict(message.get("chat"))
    bot = _dict(message.get("sender_business_bot"))
    name = _name(chat)
    fields = _sender_fields(chat, chat) | {"telegram_update": kind, "telegram_direction": "outgoing"}
    if isinstance(sent_by := (bot or user).get("id"), int):
        fields["telegram_sent_by"] = f"telegram:{sent_by}"
    if isinstance(message.get("message_id"), int):
        fields["telegram_message_id"] = message["message_id"]
    draft = InquiryDraft(
        envelope=envelope,
        identity=Identity(name=name, messenger=fields.get("messenger_id")),
        message=_str(message.get("text")) or _str(message.get("caption")),
        title=f"Telegram reply: {name or 'message'}",
        fields=fields,
    )
    draft.opens_lead = False
    if "messenger_id" not in fields:
        draft.dropped = "outgoing business message without the customer's chat id"
    return draft


def _message(envelope: Envelope, kind: str, message: dict[str, Any], region: str | None) -> InquiryDraft:
    if _outgoing(kind, message):
        return _reply(envelope, kind, message)
    user, chat, contact = _dict(message.get("from")), _dict(message.get("chat")), _dict(message.get("contact"))
    text = _str(message.get("text")) or _str(message.get("caption"))
    phones = _phones_in_text(text, region)
    # The `request_contact` button shares the sender's own card (its user_id is the sender's id); any other card is
    # somebody else's (a friend's number forwarded to the shop): kept on the inquiry, never the sender's identity.
    shared = None
    if contact and (contact.get("user_id") is None or contact.get("user_id") != user.get("id")):
        contact, shared = {}, contact
    phone = pbx_number(_str(contact.get("phone_number")))
    name = _name(contact) or _name(user) or _name(chat)
    fields = _sender_fields(user or chat, chat) | {"telegram_update": kind}
    if shared is not None:
        fields["shared_contact"] = {
            k: v
            for k, v in {
                "phone": _str(shared.get("phone_number")),
                "name": _name(shared),
                "telegram_id": shared.get("user_id") if isinstance(shared.get("user_id"), int) else None,
            }.items()
            if v is not None
        }
        card = " ".join(v for v in (_name(shared), _str(shared.get("phone_number"))) if v)
        text = text or f"shared someone else's contact: {card}".strip()
    if isinstance(message.get("message_id"), int):
        fields["telegram_message_id"] = message["message_id"]
    if phones:
        fields["phones"] = phones
    draft = InquiryDraft(
        envelope=envelope,
        identity=Identity(name=name, phone_raw=phone, messenger=fields.get("messenger_id")),
        message=text or ("shared a contact" if contact else None),
        title=f"Telegram: {name or 'message'}",
        fields=fields,
    )
    if kind.startswith("edited"):
        draft.opens_lead = False  # the original message opened the lead; the edit is history
    if user.get("is_bot") is True:
        draft.dropped = "message from a bot"
    elif message.get("is_automatic_forward") is True or isinstance(message.get("sender_chat"), dict):
        # A channel's post copied into its discussion group (sent "from" the placeholder user 777000, "Telegram"),
        # or a message sent on behalf of a chat: no person wrote it.
        draft.dropped = "message on behalf of a chat (a channel post or an anonymous admin)"
    return draft


def _callback(envelope: Envelope, query: dict[str, Any], options: dict[str, Any]) -> InquiryDraft:
    user = _dict(query.get("from"))
    chat = _dict(_dict(query.get("message")).get("chat"))
    data = _str(query.get("data"))
    name = _name(user)
    fields = _sender_fields(user, chat)
    draft = InquiryDraft(
        envelope=envelope,
        identity=Identity(name=name, messenger=fields.get("messenger_id")),
        message=f"pressed button: {data}" if data else "pressed a button",
        title=f"Telegram: {name or 'button'}",
        fields=fields | {"telegram_update": "callback_query", "callback_data": data},
    )
    if data and data in (options.get("callback_data") or []):
        draft.tags = [CALLBACK_TAG]
    return draft


def parse_telegram(envelope: Envelope, options: dict[str, Any]) -> InquiryDraft:
    try:
        update = loads(envelope.payload)
    except JSON_ERRORS as exc:
        raise PermanentError(f"Telegram update is not JSON: {json_error_text(exc)}") from exc
    if not isinstance(update, dict):
        raise PermanentError("Telegram update is not a JSON object")
    kinds = [name for name in update if name != "update_id"]
    kind = kinds[0] if kinds else "(empty update)"
    if kind in MESSAGES and isinstance(update[kind], dict):
        return _message(envelope, kind, update[kind], options.get("default_region"))
    if kind == "callback_query" and isinstance(update[kind], dict):
        return _callback(envelope, update[kind], options)
    draft = InquiryDraft(envelope=envelope)
    draft.dropped = f"unhandled update type: {kind}" if kind in IGNORED else f"unknown event: {kind}"[:200]
    return draft
