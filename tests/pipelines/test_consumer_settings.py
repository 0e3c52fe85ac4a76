"""The pipeline's durable consumer is brought to this release's settings when it is there already.

`pull_subscribe` used a durable consumer that existed as it was: one an older release made (ack_wait 60 s) or an
admin (a max_deliver after which JetStream stops delivering an envelope, leaving it in INBOUND neither stored nor
dead-lettered) kept its settings for ever.
"""

from __future__ import annotations

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leadhub.pipelines.consumer import ACK_WAIT, DURABLE
from tests.conftest import HubFactory
from tests.helpers import wait_for

FORM = {"name": "site-form", "type": "form", "rate_limit": None}


async def test_an_existing_consumer_takes_the_pipelines_settings(make_hub: HubFactory) -> None:
    front = await make_hub([FORM], roles="http")  # declares the streams; runs no pipeline
    assert front.hub.queue is not None and front.hub.embedded is not None
    jetstream = front.hub.queue.jetstream
    older = ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=60,
        max_deliver=3,
        filter_subject="inbound.>",
    )
    await jetstream.add_consumer("INBOUND", older)
    back = await make_hub([FORM], nats_url=front.hub.embedded.url, roles="pipeline")

    async def updated() -> bool:
        info = await jetstream.consumer_info("INBOUND", DURABLE)
        return info.config.max_deliver == -1 and info.config.ack_wait == ACK_WAIT

    await wait_for(updated, timeout=15, what="the pipeline's consumer to take this release's settings")
    async with await front.post("/hooks/site-form", json={"name": "Ivan", "phone": "+79161234567"}) as response:
        assert response.status == 202
    await front.wait_items("/api/inquiries", 1)  # stored by the pipeline of `back`, in the shared database
    assert back.hub.consumer is not None
