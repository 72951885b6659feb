"""--max-reject-ratio's judgement of micro-batches (streaming.RejectLimit), without Spark."""

from sensorstream.config import load_settings
from sensorstream.streaming import REJECT_RATIO_MIN_RECORDS, RejectLimit


def settings(ratio):
    return load_settings(environ={"STREAM_MAX_REJECT_RATIO": ratio, "KAFKA_DEAD_LETTER_TOPIC": "dlq"})


def test_off_by_default_never_stops():
    limit = RejectLimit()
    limit.check(settings(""), 0, 1_000, 1_000)
    assert not limit.reached.is_set()


def test_a_batch_over_the_ratio_is_named_with_its_figures_and_the_fix():
    limit = RejectLimit()
    limit.check(settings("0.2"), 4, 1_000, 200)  # at the ratio: not over
    assert not limit.reached.is_set()
    limit.check(settings("0.2"), 5, 1_000, 201)
    assert limit.reached.is_set() and limit.batch_id == 5
    message = str(limit.error(committed=True))
    assert message.startswith(
        "micro-batch 5 rejected 201 of 1,000 records (20.1%), over --max-reject-ratio 0.2; "
        "see the dead-letter topic dlq"
    )
    assert "(it goes on after micro-batch 5)" in message and "--max-reject-ratio (STREAM_MAX_REJECT_RATIO)" in message
    assert "\n" not in message
    assert "runs again" in str(limit.error(committed=False))
    limit.check(settings("0.2"), 6, 1_000, 900)  # the first one over is the one named
    assert limit.batch_id == 5


def test_small_batches_are_judged_together():
    limit = RejectLimit()
    limit.check(settings("0.3"), 0, 3, 2)  # 67% of 3 records: not judged alone
    assert not limit.reached.is_set()
    limit.check(settings("0.3"), 1, REJECT_RATIO_MIN_RECORDS - 3, 10)  # 12 of 100 together: under
    assert not limit.reached.is_set()
    limit.check(settings("0.3"), 2, 60, 30)
    limit.check(settings("0.3"), 3, 60, 30)  # 60 of 120 from batch 2 on
    assert limit.reached.is_set() and limit.batch_id == 3
    assert limit.message.startswith("micro-batches 2-3 rejected 60 of 120 records (50.0%)")
