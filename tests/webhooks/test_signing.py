"""Signatures as the Standard Webhooks specification makes them: its published test vector, the
secrets' form, two signatures during a rotation, and the receiver in docs/webhooks.md verifying
a real delivery (and refusing a tampered one)."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.webhooks.conftest import ADMIN
from webhooks import signing
from webhooks.models import Subscription
from webhooks.services import subscription_secret_rotate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def test_the_specifications_test_vector():
    """The vector every reference library tests (standard-webhooks/standard-webhooks,
    libraries/python/tests/test_webhooks.py::test_sign_function, and the Go, Java, C# ones)."""
    signature = signing.signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        message_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_new_secret_is_whsec_and_32_random_bytes():
    secrets = {signing.secret_new() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == signing.SECRET_BYTES
    assert "." not in signing.message_id_new()


@pytest.mark.parametrize(
    "secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + "A" * 8]
)
def test_a_secret_of_another_form_is_refused(secret):
    with pytest.raises(signing.SecretInvalid):
        signing.secret_key(secret)


def test_during_a_rotation_both_secrets_sign(subscribe, receiver, emit):
    subscription, old = subscribe()
    new = subscription_secret_rotate(subscription_id=subscription.pk, actor=ADMIN)
    assert new != old
    assert new.startswith("whsec_")
    emit()
    rotating = receiver.received[-1]
    assert len(rotating.signatures) == 2
    assert rotating.verified_by(new)
    assert rotating.verified_by(old)
    # Once the rotation period is over, only the new secret signs.
    Subscription.objects.filter(pk=subscription.pk).update(
        previous_secret_until=timezone.now() - timedelta(seconds=1)
    )
    emit()
    after = receiver.received[-1]
    assert len(after.signatures) == 1
    assert after.verified_by(new)
    assert not after.verified_by(old)


def test_a_second_rotation_drops_the_oldest_secret(subscribe, receiver, emit):
    subscription, first = subscribe()
    second = subscription_secret_rotate(subscription_id=subscription.pk, actor=ADMIN)
    third = subscription_secret_rotate(subscription_id=subscription.pk, actor=ADMIN)
    emit()
    signed = receiver.received[-1]
    assert signed.verified_by(third)
    assert signed.verified_by(second)
    assert not signed.verified_by(first)


def test_with_no_rotation_period_the_old_secret_stops_at_once(subscribe, receiver, emit, settings):
    settings.WEBHOOK_SECRET_ROTATION_HOURS = 0
    subscription, old = subscribe()
    new = subscription_secret_rotate(subscription_id=subscription.pk, actor=ADMIN)
    emit()
    assert receiver.received[-1].verified_by(new)
    assert not receiver.received[-1].verified_by(old)


def test_the_documented_receiver_verifies_a_delivery_and_refuses_a_tampered_one(
    subscribe, receiver, emit
):
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1)
    documented: dict = {"__name__": "docs_example"}
    exec(compile(code, "docs/webhooks.md", "exec"), documented)  # defines verify; serves nothing
    verify = documented["verify"]
    _, secret = subscribe()
    emit()
    delivery = receiver.received[-1]
    assert verify(secret, delivery.headers, delivery.body)
    assert not verify(secret, delivery.headers, delivery.body.replace(b'"n":1', b'"n":2'))
    assert not verify(signing.secret_new(), delivery.headers, delivery.body)
    stale = {
        **delivery.headers,
        "webhook-timestamp": str(int(delivery.headers["webhook-timestamp"]) - 600),
    }
    assert not verify(secret, stale, delivery.body)
