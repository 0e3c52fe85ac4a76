"""Identity at scale: precision, recall and duplicate rate of contacts on a labelled noisy data set, and
pipeline throughput with 0 and with N (default 1,000,000) contacts already stored.

People touch 1-5 channels (form, email, phone call, Telegram, shop) and write themselves the way people do:
`8 (916) ...`, `+7-916-...`, upper-case emails, Gmail dots and +tags. Some touches name only a Telegram
id or only a phone, so some people cannot be linked by anyone: that is the recall a real store can reach.
Precision and recall are pairwise over inquiries (two inquiries of one person in one contact is a true
pair); the duplicate rate is contacts per person minus one.

    python -m bench.identity --people 5000 --preload 1000000 [--database-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import string
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import machine
from leadhub.envelope import Envelope
from leadhub.ids import new_id
from leadhub.pipelines.intake import IntakePipeline
from leadhub.pipelines.model import SourceSpec
from leadhub.store.db import create_engine, upgrade
from leadhub.store.models import Base, Contact, ContactIdentifier, Inquiry

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SOURCES = {
    "site-form": SourceSpec("form", {}),
    "bot": SourceSpec("telegram", {}),
    "shop": SourceSpec("order", {}),
    "pbx": SourceSpec("form", {}),
}
FIRST = ["anna", "ivan", "maria", "oleg", "elena", "pavel", "olga", "sergey", "nina", "dmitry", "irina", "yuri"]
LAST = ["smirnov", "ivanov", "kuznetsov", "popov", "sokolov", "lebedev", "kozlov", "novikov", "morozov", "volkov"]
DOMAINS = ["gmail.com", "mail.example", "yandex.example", "corp.example", "gmail.com"]


def _phone_spellings(digits: str) -> list[str]:
    a, b, c, d = digits[:3], digits[3:6], digits[6:8], digits[8:]
    return [
        f"8 ({a}) {b}-{c}-{d}",
        f"+7-{a}-{b}-{c}-{d}",
        f"+7 {a} {b} {c} {d}",
        f"8{a}{b}{c}{d}",
        f"7 ({a}) {b}{c}{d}",
        f"+7 ({a}) {b}-{c}-{d} доб. 12",
    ]


def _email_spellings(local: str, domain: str) -> list[str]:
    spellings = [f"{local}@{domain}", f"{local.upper()}@{domain.upper()}", f"  {local}@{domain} "]
    if domain == "gmail.com":
        plain = local.replace(".", "")
        spellings += [f"{plain}@gmail.com", f"{local}+shop@gmail.com", f"{local}@googlemail.com"]
    return spellings


class Person:
    """One labelled person: their true identifiers and how they spell them."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.n = n
        first, last = rng.choice(FIRST), rng.choice(LAST)
        self.name = f"{first} {last}"
        self.local = f"{first}.{last}{n}"
        self.domain = rng.choice(DOMAINS)
        self.digits = f"9{rng.randrange(10**9):09d}"  # mobile 9xx xxx xx xx, unique enough among N people
        self.telegram = 100_000_000 + n
        self.has_email = rng.random() < 0.85
        self.has_phone = not self.has_email or rng.random() < 0.85

    def email(self, rng: random.Random) -> str:
        return rng.choice(_email_spellings(self.local, self.domain))

    def phone(self, rng: random.Random) -> str:
        return rng.choice(_phone_spellings(self.digits))


def _form(key: str, at: datetime, connector: str, body: dict[str, Any]) -> Envelope:
    return Envelope(
        key=key, channel="form" if connector == "site-form" else "phone", connector=connector,
        payload=json.dumps(body).encode(), content_type="application/json", received_at=at,
    )  # fmt: skip


def touches(person: Person, rng: random.Random, start: datetime) -> list[Envelope]:
    """1-5 touches within two days: each names the person the way that channel can.

    The first is a form with every identifier the person has (the form or checkout that asks for both);
    a Telegram chat shares its contact card the first time when the person has a phone. A Telegram
    user without a phone can only be recognised by their Telegram id: those touches stay apart, as
    they would for any matcher, and count against recall.
    """
    out: list[Envelope] = []
    shared_card = False
    for t in range(rng.randint(1, 5)):
        at = start + timedelta(minutes=rng.randrange(2 * 24 * 60), seconds=t)
        key = f"p{person.n}-t{t}"
        channel = "form" if t == 0 else rng.choice(["form", "form", "call", "telegram", "shop"])
        if channel == "call" and not person.has_phone:
            channel = "form"
        email = person.email(rng) if person.has_email else None
        phone = person.phone(rng) if person.has_phone else None
        if channel == "form":
            body = {"name": person.name.upper() if rng.random() < 0.2 else person.name}
            if email and (t == 0 or not phone or rng.random() < 0.8):
                body["email"] = email
            if phone and (t == 0 or "email" not in body or rng.random() < 0.6):
                body["phone"] = phone
            out.append(_form(f"form:{key}", at, "site-form", body))
        elif channel == "call":
            out.append(_form(f"pbx:{key}", at, "pbx", {"phone": person.phone(rng)}))
        elif channel == "telegram":
            message: dict[str, Any] = {
                "message_id": t + 1,
                "from": {"id": person.telegram, "is_bot": False, "first_name": person.name.split()[0]},
                "chat": {"id": person.telegram, "type": "private"},
                "date": int(at.timestamp()),
            }
            if phone and not shared_card:
                message["contact"] = {"phone_number": phone, "first_name": "x", "user_id": person.telegram}
                shared_card = True
            else:
                message["text"] = "hello, is it in stock?"
            payload = json.dumps({"update_id": person.n * 10 + t, "message": message}).encode()
            out.append(
                Envelope(
                    key=f"tg:{key}",
                    channel="chat",
                    connector="bot",
                    payload=payload,
                    content_type="application/json",
                    received_at=at,
                )
            )
        else:
            order = {
                "external_id": f"o{person.n}-{t}",
                "status": "new",
                "name": person.name,
                "email": email or person.email(rng),
                "phone": phone,
                "total": "19.90",
                "currency": "EUR",
                "items": [{"name": "Mug", "quantity": 1}],
            }
            out.append(
                Envelope(
                    key=f"shop:{key}",
                    channel="shop",
                    connector="shop",
                    payload=json.dumps(order).encode(),
                    content_type="application/json",
                    received_at=at,
                )
            )
    return out


def dataset(people: int, seed: int) -> tuple[list[Envelope], dict[str, int]]:
    rng = random.Random(seed)
    envelopes: list[Envelope] = []
    truth: dict[str, int] = {}
    for n in range(people):
        person = Person(n, rng)
        for envelope in touches(person, rng, T0 + timedelta(minutes=rng.randrange(30 * 24 * 60))):
            envelopes.append(envelope)
            truth[envelope.key] = n
    rng.shuffle(envelopes)  # arrival order is not person order
    return envelopes, truth


def carried(envelope: Envelope) -> set[str]:
    """Which of its person's identifiers an envelope carries (whatever the spelling): email, phone, telegram."""
    data = json.loads(envelope.payload)
    if "message" in data:
        return {"telegram"} | ({"phone"} if "contact" in data["message"] else set())
    return {kind for kind in ("email", "phone") if data.get(kind)}


def linkable_pairs(envelopes: list[Envelope], truth: dict[str, int]) -> int:
    """Pairs of one person's inquiries joined by a chain of shared identifiers: the most exact matching can find."""
    groups: dict[int, list[set[str]]] = {}
    for envelope in envelopes:
        person_groups = groups.setdefault(truth[envelope.key], [])
        tokens = carried(envelope)
        joined = [g for g in person_groups if g & tokens]
        merged = set().union(tokens, *joined) | {f"#{envelope.key}"}
        person_groups[:] = [g for g in person_groups if not g & tokens] + [merged]
    return sum(_pairs(sum(1 for t in g if t.startswith("#"))) for gs in groups.values() for g in gs)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def scores(truth: dict[str, int], predicted: dict[str, str], linkable: int) -> dict[str, float]:
    """Pairwise precision/recall from the contingency table of (person, contact); `linkable` pairs for the
    recall of what the data lets any exact matcher link."""
    cells = Counter((truth[k], predicted[k]) for k in truth)
    by_person = Counter(truth[k] for k in truth)
    by_contact = Counter(predicted[k] for k in truth)
    true_pairs = sum(_pairs(c) for c in cells.values())
    predicted_pairs = sum(_pairs(c) for c in by_contact.values())
    actual_pairs = sum(_pairs(c) for c in by_person.values())
    contacts_per_person = Counter(p for p, _ in cells)
    return {
        "precision": true_pairs / predicted_pairs if predicted_pairs else 1.0,
        "recall": true_pairs / actual_pairs if actual_pairs else 1.0,
        "recall_of_linkable": true_pairs / linkable if linkable else 1.0,
        "duplicate_rate": sum(contacts_per_person.values()) / len(by_person) - 1,
        "people": len(by_person),
        "contacts": len(by_contact),
    }


async def preload_contacts(engine: AsyncEngine, count: int, chunk: int = 20_000) -> float:
    """`count` unrelated contacts, each with an email and a phone identifier and the inquiry it came from,
    inserted in bulk; returns seconds. The inquiries matter: every batch looks its keys up among them."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    earlier = now - timedelta(days=30)
    contact_t, ident_t, inquiry_t = Contact.__table__, ContactIdentifier.__table__, Inquiry.__table__
    letters = string.ascii_lowercase
    for base in range(0, count, chunk):
        contacts, idents, inquiries = [], [], []
        for n in range(base, min(base + chunk, count)):
            cid = new_id()
            email = f"pre{n}.{letters[n % 26]}@preload.example"
            phone = f"+7800{n:07d}"
            contacts.append({"id": cid, "name": f"Pre {n}", "email": email, "phone": phone, "company": None,
                             "consent": None, "merged_into": None, "review": None,
                             "created_at": now, "updated_at": now})  # fmt: skip
            idents.append({"kind": "email", "value": email, "contact_id": cid, "created_at": now})
            idents.append({"kind": "phone", "value": phone, "contact_id": cid, "created_at": now})
            inquiries.append({"id": new_id(), "key": f"preload-{n}", "channel": "form", "connector": "site-form",
                              "received_at": earlier, "contact_id": cid, "lead_id": None, "name": f"Pre {n}",
                              "email": email, "phone": phone, "message": None, "fields": {}, "dropped": None,
                              "content_type": "application/json", "meta": {}, "payload": b"{}",
                              "created_at": earlier})  # fmt: skip
        async with engine.begin() as conn:
            await conn.execute(contact_t.insert(), contacts)
            await conn.execute(ident_t.insert(), idents)
            await conn.execute(inquiry_t.insert(), inquiries)
    return time.perf_counter() - started


async def run_pipeline(engine: AsyncEngine, envelopes: list[Envelope], batch: int) -> float:
    """Inquiries per second through parse, normalize and the intake transaction (no queue: the store is measured)."""
    pipeline = IntakePipeline(engine, SOURCES, default_region="RU")
    started = time.perf_counter()
    for start in range(0, len(envelopes), batch):
        await pipeline.store([pipeline.prepare(e) for e in envelopes[start : start + batch]])
    return len(envelopes) / (time.perf_counter() - started)


async def contacts_of(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(Inquiry.key, Inquiry.contact_id))).all())


async def drop_tables(engine: AsyncEngine) -> None:
    """leadhub's tables out of a PostgreSQL database given to the bench (it starts, and leaves, it empty)."""
    async with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


async def fresh_engine(database_url: str | None, workdir: Path) -> AsyncEngine:
    engine = create_engine(database_url or f"sqlite+aiosqlite:///{workdir / 'identity.db'}")
    if database_url:
        await drop_tables(engine)
    await upgrade(engine)
    return engine


async def run(people: int, preload: int, database_url: str | None, batch: int = 500, seed: int = 7) -> dict[str, Any]:
    envelopes, truth = dataset(people, seed)
    result: dict[str, Any] = {"people": people, "inquiries": len(envelopes), "batch": batch, "preload": preload}
    with tempfile.TemporaryDirectory(prefix="leadhub-identity-") as tmp:
        engine = await fresh_engine(database_url, Path(tmp))
        try:
            result["per_s_empty"] = round(await run_pipeline(engine, envelopes, batch))
            result |= {
                k: round(v, 5) if isinstance(v, float) else v
                for k, v in scores(truth, await contacts_of(engine), linkable_pairs(envelopes, truth)).items()
            }
        finally:
            if database_url:
                await drop_tables(engine)
            await engine.dispose()
        if preload:
            engine = await fresh_engine(database_url, Path(tmp) / "preloaded")
            try:
                result["preload_seconds"] = round(await preload_contacts(engine, preload), 1)
                result["per_s_preloaded"] = round(await run_pipeline(engine, envelopes, batch))
            finally:
                if database_url:
                    await drop_tables(engine)
                await engine.dispose()
            result["preloaded_vs_empty"] = round(result["per_s_preloaded"] / result["per_s_empty"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument(
        "--preload", type=int, default=0, help="contacts (each with its inquiry) stored before the run (e.g. 1000000)"
    )
    parser.add_argument("--database-url", help="default: a fresh SQLite file; PostgreSQL tables are dropped!")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = asyncio.run(run(args.people, args.preload, args.database_url, args.batch, args.seed))
    print(json.dumps({"machine": machine(), "identity": result}, indent=2))
    print(  # the summary to stderr: stdout is one JSON object (bench.compare reads it)
        f"precision {result['precision']:.4f} (target >= 0.995)  recall {result['recall']:.4f} (target >= 0.97; "
        f"{result['recall_of_linkable']:.4f} of the linkable pairs)  "
        f"duplicate rate {result['duplicate_rate']:.4f}  {result['per_s_empty']} inquiries/s empty"
        + (
            f", {result['per_s_preloaded']}/s with {args.preload:,} contacts ({result['preloaded_vs_empty']:.2f}x)"
            if args.preload
            else ""
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
