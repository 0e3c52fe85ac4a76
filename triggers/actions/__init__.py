"""Action types by name: the registry the compiler and the scheduler look up (one module per type)."""

from __future__ import annotations

from leadhub.triggers.actions.base import ActionType
from leadhub.triggers.actions.create_task import CreateTaskAction
from leadhub.triggers.actions.notify_telegram import NotifyTelegramAction
from leadhub.triggers.actions.send_email import SendEmailAction
from leadhub.triggers.actions.update_lead import UpdateLeadAction
from leadhub.triggers.actions.webhook import WebhookAction

ACTIONS: dict[str, ActionType] = {
    action.name: action
    for action in (SendEmailAction(), CreateTaskAction(), WebhookAction(), UpdateLeadAction(), NotifyTelegramAction())
}
