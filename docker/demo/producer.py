"""Demo data for eddy: users (an upsert table) and bids (an append-only stream).

Creates the topics `users` (1 partition) and `bids` (3 partitions) if missing,
writes 10 users keyed by id, then produces ~20 bids per second forever, now and
then moving a user to another city (an upsert: same key, new value).

Environment: BROKERS (default localhost:9092), RATE (bids per second, default 20).
"""

import json
import os
import random
import socket
import sys
import time
from datetime import datetime, timezone

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

BROKERS = os.environ.get("BROKERS", "localhost:9092")
RATE = float(os.environ.get("RATE", "20"))
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
CITIES = ["Berlin", "Lisbon", "Oslo", "Paris", "Tokyo"]
TOPICS = {"users": 1, "bids": 3}


def log(msg):
    print(f"producer: {msg}", file=sys.stderr, flush=True)


def wait_for_broker():
    """Poll the first bootstrap address until it accepts TCP connections.

    A plain socket keeps the log quiet: librdkafka would log every refused
    reconnect attempt while the broker is still starting."""
    host, _, port = BROKERS.split(",")[0].rpartition(":")
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            return
        except OSError as e:
            log(f"waiting for broker {BROKERS}: {e}")
            time.sleep(2)


def create_topics():
    """Create missing topics, retrying until the broker answers metadata requests."""
    admin = AdminClient({"bootstrap.servers": BROKERS})
    while True:
        try:
            existing = admin.list_topics(timeout=10).topics
            break
        except KafkaException as e:
            log(f"broker not ready yet: {e}")
            time.sleep(2)
    missing = [NewTopic(t, num_partitions=n, replication_factor=1)
               for t, n in TOPICS.items() if t not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing).items():
        try:
            future.result()
            log(f"created topic {topic}")
        except KafkaException as e:  # e.g. created concurrently by someone else
            log(f"topic {topic}: {e}")


def send_user(producer, user):
    producer.produce("users", key=str(user["id"]), value=json.dumps(user))


def main():
    wait_for_broker()
    create_topics()
    producer = Producer({"bootstrap.servers": BROKERS, "linger.ms": 20})

    users = [{"id": i, "name": name, "city": random.choice(CITIES)}
             for i, name in enumerate(NAMES, start=1)]
    for user in users:
        send_user(producer, user)
    producer.flush()
    log(f"wrote {len(users)} users; producing {RATE:g} bids/s to {BROKERS}")

    sent = 0
    while True:
        now = datetime.now(timezone.utc)
        bid = {
            "auction": random.randint(1000, 1020),
            "bidder": random.choice(users)["id"],
            "price": random.randint(1, 500),
            "date_time": now.strftime("%Y-%m-%d %H:%M:%S.%f"),
        }
        producer.produce("bids", key=str(bid["auction"]), value=json.dumps(bid))
        sent += 1
        if random.random() < 0.01:  # ~ every 5 s at 20 bids/s
            user = random.choice(users)
            user["city"] = random.choice([c for c in CITIES if c != user["city"]])
            send_user(producer, user)
            log(f"user {user['id']} ({user['name']}) moved to {user['city']}")
        if sent % 1000 == 0:
            log(f"{sent} bids sent")
        producer.poll(0)  # serve delivery callbacks, keep the queue drained
        time.sleep(1 / RATE)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
