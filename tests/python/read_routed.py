"""Reads one RoutedLead value (Confluent wire format) with the official Confluent
AvroDeserializer through the registry; prints it as JSON. Usage: read_routed.py URL TOPIC FILE"""
import datetime
import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

url, topic, path = sys.argv[1:4]
value = open(path, "rb").read()
lead = AvroDeserializer(SchemaRegistryClient({"url": url}))(
    value, SerializationContext(topic, MessageField.VALUE)
)
print(json.dumps(lead, default=lambda v: int(v.timestamp() * 1000) if isinstance(v, datetime.datetime) else str(v)))
