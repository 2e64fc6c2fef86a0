"""Proves the official Confluent Python client works unchanged against leadflow's registry
and wire format. Driven by tests/python_compat.rs; prints one JSON object on stdout.

Usage: confluent_compat.py REGISTRY_URL AVRO_DIR RUST_VALUE_FILE
"""
import datetime
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

registry_url, avro_dir, rust_value_file = sys.argv[1:4]
client = SchemaRegistryClient({"url": registry_url})
schema_str = open(f"{avro_dir}/contact_event.avsc").read()


def plain(value):
    """fastavro gives datetimes for timestamp-millis; compare as epoch milliseconds."""
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


contact = {
    "envelope": {
        "event_id": "py-evt-1",
        "event_type": "Contact.created",
        "aggregate_id": "ct_py",
        "source": "scraper:site_x",
        "occurred_at": 1767600000123,
        "delivery_attempt": 2,
        "schema_version": "1",
        "correlation_id": None,
    },
    "payload": {
        "contact_id": "ct_py",
        "email": "grace@globex.io",
        "phone": "+15550100",
        "first_name": "Grace",
        "last_name": "Hopper",
        "title": "VP Engineering",
        "company_name": "Globex Inc",
        "company_domain": "globex.io",
        "country": "US",
        "region": "NA",
        "lifecycle_stage": "sql",
        "lead_source": "referral",
        "product_interest": "routing",
        "consent_marketing": False,
        "attributes": {"utm_source": "linkedin", "utm_campaign": "spring-launch"},
        "updated_at": 1767600000123,
    },
}

# 1. Register explicitly, then fetch back by id.
schema_id = client.register_schema("py.contacts-value", Schema(schema_str, "AVRO"))
fetched = client.get_schema(schema_id)
assert json.loads(fetched.schema_str) == json.loads(schema_str), "schema text differs"
latest = client.get_latest_version("py.contacts-value")
assert latest.schema_id == schema_id and latest.version == 1, latest

# 2. Serializer with its default config (auto.register.schemas) and a fresh deserializer.
ctx = SerializationContext("py.contacts", MessageField.VALUE)
serializer = AvroSerializer(client, schema_str)
framed = serializer(contact, ctx)
assert framed[0] == 0, "magic byte"
assert int.from_bytes(framed[1:5], "big") == schema_id, "schema id in frame"
deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
round_trip = plain(deserializer(framed, ctx))
assert round_trip == contact, (round_trip, contact)

# 3. A value leadflow encoded (Rust), read by the Confluent deserializer.
rust_value = open(rust_value_file, "rb").read()
rust_ctx = SerializationContext("rs.contacts", MessageField.VALUE)
rust_decoded = plain(deserializer(rust_value, rust_ctx))

# 4. A registry error surfaces as the client's SchemaRegistryError with Confluent's code.
from confluent_kafka.schema_registry.error import SchemaRegistryError

try:
    client.get_schema(987654)
    missing_code = None
except SchemaRegistryError as e:
    missing_code = e.error_code

print(json.dumps({
    "schema_id": schema_id,
    "python_value_hex": framed.hex(),
    "rust_decoded": rust_decoded,
    "missing_code": missing_code,
}))
