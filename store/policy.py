"""How identities are matched and inquiries grouped into leads: the settings the intake transaction follows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

DEFAULT_LEAD_WINDOW = timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    """`lead_windows` maps (lead's source channel, inquiry's channel) to a window; `*` matches any channel.

    An inquiry joins its contact's open lead when it arrived within the window of the lead's first
    touch, so a person who writes, calls and orders within three days is one lead, not three.
    A window of 0 never joins (e.g. `shop:shop: 0s` gives every order its own lead).
    """

    fold_email: bool = True
    lead_window: timedelta = DEFAULT_LEAD_WINDOW
    lead_windows: Mapping[tuple[str, str], timedelta] = field(default_factory=dict)

    def window(self, lead_channel: str, channel: str) -> timedelta:
        if not self.lead_windows:
            return self.lead_window
        for key in ((lead_channel, channel), (lead_channel, "*"), ("*", channel), ("*", "*")):
            if key in self.lead_windows:
                return self.lead_windows[key]
        return self.lead_window

    @property
    def widest_window(self) -> timedelta:
        return max([self.lead_window, *self.lead_windows.values()])
