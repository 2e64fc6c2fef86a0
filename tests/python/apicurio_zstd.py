"""A CRM connector and a data engineer's reader, written with the official Confluent Python
client against any Confluent-compatible registry (tests/python_compat.rs runs it against
Apicurio Registry). Prints one JSON object on stdout.

Usage:
  apicurio_zstd.py produce BOOTSTRAP REGISTRY_URL AVRO_DIR PREFIX N
      N contacts and one engagement each, zstd-compressed, values serialized (and their schemas
      registered) by AvroSerializer; prints {"contacts": [event ids], "engagements": [...]}
  apicurio_zstd.py consume BOOTSTRAP REGISTRY_URL PREFIX EXPECTED
      reads leads.routed.p0/p1/p2 with AvroDeserializer until EXPECTED decisions (120 s at
      most); prints {"decisions": {event_id: decision_id}, "priorities": {...}}
"""
import faulthandler
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from confluent_kafka.schema_registry import topic_subject_name_strategy


def produce(bootstrap, url, avro_dir, prefix, n):
    registry = SchemaRegistryClient({"url": url})
    contacts_topic = f"{prefix}crm.contacts.v1"
    engagements_topic = f"{prefix}crm.engagements.v1"
    contact_ser = AvroSerializer(registry, open(f"{avro_dir}/contact_event.avsc").read())
    engagement_ser = AvroSerializer(registry, open(f"{avro_dir}/engagement_event.avsc").read())
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": "zstd",
        "linger.ms": 20,
        "enable.idempotence": True,
        # Java's key hashing, as leadflow's producers use: co-partitioned with its outputs.
        "partitioner": "murmur2_random",
    })
    now = int(time.time() * 1000)
    out = {"contacts": [], "engagements": []}
    for i in range(n):
        contact_id = f"ct_py_{i}"
        event_id = str(uuid.uuid4())
        contact = {
            "envelope": {
                "event_id": event_id, "event_type": "Contact.created",
                "aggregate_id": contact_id, "source": "hubspot:acme",
                "occurred_at": now + i, "delivery_attempt": 1, "schema_version": "1",
                "correlation_id": f"corr-{i}",
            },
            "payload": {
                "contact_id": contact_id, "email": f"user{i}@globex.io", "phone": None,
                "first_name": "Grace", "last_name": f"Hopper{i}", "title": "VP Engineering",
                "company_name": "Globex Inc", "company_domain": "globex.io", "country": "US",
                "region": "NA", "lifecycle_stage": "mql" if i % 2 else "lead",
                "lead_source": "webinar", "product_interest": None,
                "consent_marketing": True, "attributes": {"i": str(i)},
                "updated_at": now + i,
            },
        }
        value = contact_ser(contact, SerializationContext(contacts_topic, MessageField.VALUE))
        producer.produce(contacts_topic, key=contact_id, value=value, timestamp=now + i)
        out["contacts"].append(event_id)
        engagement_id = str(uuid.uuid4())
        engagement = {
            "envelope": {
                "event_id": engagement_id, "event_type": "Engagement.recorded",
                "aggregate_id": contact_id, "source": "web",
                "occurred_at": now + n + i, "delivery_attempt": 1, "schema_version": "1",
                "correlation_id": None,
            },
            "payload": {
                "engagement_id": f"en_{i}", "contact_id": contact_id,
                "type": "pricing_page_view", "channel": "web", "campaign": None,
                "outcome": None, "occurred_at": now + n + i,
            },
        }
        value = engagement_ser(engagement, SerializationContext(engagements_topic, MessageField.VALUE))
        producer.produce(engagements_topic, key=contact_id, value=value, timestamp=now + n + i)
        out["engagements"].append(engagement_id)
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} records not delivered"
    print(json.dumps(out))


def consume(bootstrap, url, prefix, expected):
    # The topic strategy, as leadflow registers: confluent-kafka 2.16's default first asks the
    # registry for subject associations, a request Apicurio sometimes never answers.
    deserializer = AvroDeserializer(
        SchemaRegistryClient({"url": url}),
        conf={"subject.name.strategy": topic_subject_name_strategy},
    )
    # If anything hangs, say where before the test's deadline (180 s) kills us.
    faulthandler.dump_traceback_later(150, exit=True)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"py-reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    topics = [f"{prefix}leads.routed.{p}" for p in ("p0", "p1", "p2")]
    # Every partition from the start, without joining a group (no rebalance to wait for).
    metadata = consumer.list_topics(timeout=30)
    consumer.assign([
        TopicPartition(t, p, OFFSET_BEGINNING)
        for t in topics
        for p in metadata.topics[t].partitions
    ])
    decisions, priorities = {}, {}
    deadline = time.time() + 120
    while len(decisions) < expected and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise SystemExit(f"consumer error: {m.error()}")
        lead = deserializer(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
        assert dict(m.headers() or [])["decision_id"].decode() == lead["decision_id"]
        decisions[lead["event_id"]] = lead["decision_id"]
        priorities[lead["priority"]] = priorities.get(lead["priority"], 0) + 1
    consumer.close()
    print(json.dumps({"decisions": decisions, "priorities": priorities}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    elif mode == "consume":
        consume(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(__doc__)
