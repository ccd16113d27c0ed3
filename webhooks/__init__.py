"""Webhooks: subscriptions, and the signed deliveries of events to them (docs/webhooks.md).

Modules: ``models`` (subscriptions, deliveries, attempts), ``signing`` (Standard Webhooks
signatures; pure), ``sender`` (one HTTP attempt under the outbound policy), ``sending`` (the
ordered send loop, backoff, disabling, the sweep), ``services`` (subscriptions, the event
listener, redelivery), ``tasks`` (the Celery adapters) and ``admin``.

Dependency direction: imports ``registry``, ``releases`` and ``runs`` (its outbound policy,
``runs.egress``), never ``evaluations`` or ``api``; no app imports webhooks. The events come up
through the bottom app's hook, ``registry.events``: every app calls ``event_emit`` where its
event happens, and ``WebhooksConfig.ready()`` registers the listener (decision 0045).
"""
