"""Notifiers deliver incident events (webhook, ...); the outbox makes that delivery durable."""
from .base import NOTIFIERS, DeliveryError, Notifier, build_notifier
from .outbox import OutboxDispatcher, enqueue
from .webhook import WebhookNotifier

__all__ = ["NOTIFIERS", "DeliveryError", "Notifier", "OutboxDispatcher", "WebhookNotifier", "build_notifier", "enqueue"]
