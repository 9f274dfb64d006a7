"""Event outputs (issue 21): where a stream's events go beyond its own sinks — webhooks
(``webhooks.py``), MQTT (``mqtt.py``) and the event history in the store (``history.py``,
issue 22: written through a callable the root hands in). Built by the composition root from
its settings and handed to the streams through ``streams.stream.EventSink`` (``publish(stream_id, event)``,
never blocking); each output has a bounded queue per target, counts what it drops, and a
target that is down costs counted drops, never a stream."""

from .fanout import EventOutputs
from .history import EventHistory, HistoryConfig, HistoryEvent
from .mqtt import Mqtt, MqttConfig, parse_mqtt_url
from .webhooks import WebhookConfig, Webhooks, WebhookTarget, sign

__all__ = ["EventHistory", "EventOutputs", "HistoryConfig", "HistoryEvent", "Mqtt", "MqttConfig", "WebhookConfig",
           "WebhookTarget", "Webhooks", "parse_mqtt_url", "sign"]
