"""Events for the consumer endpoints (Standard Webhooks), through an outbox (DESIGN §9, §11).

It sits at the bottom of the app picture beside alerts and imports no other project app: the app that owns a
fact calls `outbox.services.event_emit` inside the transaction that records the fact.
"""
