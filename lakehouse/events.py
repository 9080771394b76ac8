"""S3 event notifications through SQS: what the original design's Lambda trigger received, read by the sensor.

The input bucket sends `s3:ObjectCreated:*` for its entity prefixes to an SQS queue (docs/aws.md). The sensor
long-polls the queue, asks for runs for the file versions the events name, and deletes a message only once the
ingestion log has settled every version it names (or it names nothing the lakehouse ingests); until then the
message comes back after a visibility timeout and is looked at again. S3 events are at-least-once and may come late
or twice: the ingestion log stays the final word, so a duplicate costs a lookup, and a lost one is found by the sweep.

No Dagster here: the queue is a boto3 SQS client, and the events become `LandedFile`s like a listing's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator
from urllib.parse import unquote_plus

from lakehouse.landing import LandedFile, _hidden, entity_for_key

log = logging.getLogger(__name__)
MAX_BATCH = 10  # SQS's limit per receive, delete or visibility change
# A received message stays out of sight this long, whatever the queue's default: longer than a tick may take
# (a sensor evaluation ends within 60 s), so the tick still holds it when it deletes it or sets it to come back.
RECEIVED_FOR_SECONDS = 120


@dataclass
class Message:
    """One SQS message: the landed files its S3 event records name (none: nothing for the lakehouse)."""

    message_id: str
    receipt_handle: str
    body: str
    files: list[LandedFile] = field(default_factory=list)
    problem: str | None = None  # a body that is not an S3 event


def files_in_event(body: str, bucket: str, prefix: str) -> list[LandedFile]:
    """The landed files an S3 event notification names: created objects of `bucket` under `prefix`'s entity
    prefixes; nothing for a test event, another bucket, a folder marker or a dot-file. ValueError when the body
    is not an S3 event at all.

    Keys arrive URL-encoded (`input%2Fpost%2Fa+b.csv`), as S3 sends them."""
    event = json.loads(body)
    if not isinstance(event, dict):
        raise ValueError("not a JSON object")
    if event.get("Event") == "s3:TestEvent":  # sent once when the notification is configured
        return []
    if "Records" not in event:
        raise ValueError("no Records: not an S3 event notification")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    files = []
    for record in event["Records"]:
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record["s3"]
        if s3["bucket"]["name"] != bucket:
            continue
        full = unquote_plus(s3["object"]["key"])
        if not full.startswith(prefix) or full.endswith("/"):
            continue
        key = full[len(prefix):]
        if entity_for_key(key) is None or _hidden(key):
            continue
        when = datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00")).astimezone(timezone.utc)
        files.append(LandedFile(key=key, uri=f"s3://{bucket}/{full}", size=int(s3["object"].get("size", 0)),
                                modified_at=when, etag=str(s3["object"]["eTag"]).strip('"')))
    return files


class EventQueue:
    """The SQS queue the input bucket notifies; `client` is a boto3 SQS client."""

    def __init__(self, client, url: str, bucket: str, prefix: str = "", dead_letter_url: str | None = None):
        self.client, self.url, self.bucket, self.prefix = client, url, bucket, prefix
        self.dead_letter_url = dead_letter_url

    def receive(self, max_messages: int, wait_seconds: int) -> list[Message]:
        """Up to `max_messages`, in batches of ten: the first call long-polls `wait_seconds` (an empty queue
        answers after that wait, a busy one at once), the next ones do not wait, and the first empty answer ends it.
        Each message received is invisible to other receivers for the queue's visibility timeout."""
        messages: list[Message] = []
        wait = wait_seconds
        while len(messages) < max_messages:
            answer = self.client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=min(MAX_BATCH, max_messages - len(messages)),
                WaitTimeSeconds=wait, VisibilityTimeout=RECEIVED_FOR_SECONDS)
            batch = answer.get("Messages", [])
            if not batch:
                break
            messages.extend(self._parse(m) for m in batch)
            wait = 0
        return messages

    def _parse(self, raw: dict) -> Message:
        message = Message(raw["MessageId"], raw["ReceiptHandle"], raw["Body"])
        try:
            message.files = files_in_event(raw["Body"], self.bucket, self.prefix)
        except (ValueError, KeyError, TypeError) as exc:
            message.problem = f"not an S3 event notification ({exc.__class__.__name__}: {exc})"
        return message

    def delete(self, messages: list[Message]) -> None:
        for chunk in _chunks(messages):
            answer = self.client.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)])
            _raise_failed("delete", answer)

    def look_again_in(self, messages: list[Message], seconds: int) -> None:
        """Keep messages whose files are not settled yet out of sight for `seconds`, then receive them again."""
        for chunk in _chunks(messages):
            answer = self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                for i, m in enumerate(chunk)])
            _raise_failed("change the visibility of", answer)

    def set_aside(self, message: Message, cause: str) -> bool | None:
        """Copy a message the sensor gave up on to the dead-letter queue, with the cause as an attribute (an
        operator's list of what needs them); the caller deletes it here. None: no dead-letter queue is configured
        (the sensor's cursor and log keep the cause); False: it refused (the message stays, looked at again)."""
        if not self.dead_letter_url:
            return None
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.send_message(QueueUrl=self.dead_letter_url, MessageBody=message.body, MessageAttributes={
                "lakehouse_cause": {"DataType": "String", "StringValue": cause[:1000]}})
        except (BotoCoreError, ClientError) as exc:
            log.error("cannot set message %s aside in %s: %s", message.message_id, self.dead_letter_url, exc)
            return False
        return True


def _chunks(messages: list[Message]) -> Iterator[list[Message]]:
    for start in range(0, len(messages), MAX_BATCH):
        yield messages[start:start + MAX_BATCH]


def _raise_failed(what: str, answer: dict) -> None:
    failed = answer.get("Failed") or []
    # A receipt handle that expired (the message came back to another receiver) is not an error: the message is
    # looked at again when it is received again.
    real = [f for f in failed if f.get("Code") not in (
        "ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight")]
    if real:
        raise RuntimeError(f"SQS could not {what} {len(real)} messages: {real[0].get('Code')}: {real[0].get('Message')}")
    for f in failed:
        log.warning("SQS could not %s a message (%s); it will be received again", what, f.get("Code"))
