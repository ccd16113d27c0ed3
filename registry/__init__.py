"""Authoring: what a prompt *is*.

Owns prompts, their versions, localized templates, declared variables, model bindings and the
rendering engine. It sits at the bottom of the dependency graph (registry <- releases <- runs <-
evaluations; only ``api`` imports them all) and imports nothing from the other apps.

Where other apps must plug in, the registry keeps the hook and they register in their
``AppConfig.ready()``: ``registry.events`` (events, which the webhooks send), ``registry.providers``
and ``registry.admin.hub``.

Pure modules (``rendering``, ``variables``, ``locales``, ``content``, ``errors``) import no models,
so the SDK and property tests can use them without a database.
"""
