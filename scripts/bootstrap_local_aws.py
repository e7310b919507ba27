"""Create, idempotently, the buckets, topics, queues and S3 notifications the DAGs expect.

Runs against whatever endpoint boto3 is pointed at (``AWS_ENDPOINT_URL``); the local stack points
it at moto. Resource names come from ``include/local/aws-resources.json``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import boto3

RESOURCES = Path(__file__).resolve().parent.parent / "include" / "local" / "aws-resources.json"


def main() -> None:
    spec = json.loads(RESOURCES.read_text())
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        region_name=region,
    )
    s3, sqs, sns = session.client("s3"), session.client("sqs"), session.client("sns")
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in spec["buckets"]:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for topic in spec["topics"]:
        sns.create_topic(Name=topic)
    queue_arns = {}
    for queue in spec["queues"]:
        url = sqs.create_queue(QueueName=queue)["QueueUrl"]
        queue_arns[queue] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    per_bucket: dict[str, list[dict]] = defaultdict(list)
    for rule in spec["bucket_notifications"]:
        per_bucket[rule["bucket"]].append(
            {
                "Id": f"reelforge-{rule['queue']}",
                "QueueArn": queue_arns[rule["queue"]],
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": rule["prefix"]}]}},
            }
        )
    for bucket, configs in per_bucket.items():
        current = s3.get_bucket_notification_configuration(Bucket=bucket).get("QueueConfigurations", [])
        if sorted(c["Id"] for c in current) != sorted(c["Id"] for c in configs):
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"QueueConfigurations": configs}
            )
    counts = {kind: len(spec[kind]) for kind in ("buckets", "topics", "queues")}
    print("local AWS ready:", ", ".join(f"{n} {kind}" for kind, n in counts.items()))


if __name__ == "__main__":
    main()
