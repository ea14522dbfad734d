"""Home Assistant MQTT discovery: the retained config messages that make one camera one device.

Entities: an ``event`` entity fired by every alert (event types ``no_mask`` / ``incorrect_mask``),
sensors read from the stats message, and a connectivity ``binary_sensor`` for the camera. All are
wired to ``<prefix>availability``, where ``stopped`` (clean exit) counts as unavailable like
``offline`` (the Last Will). The publisher re-sends these when Home Assistant announces
``online`` on ``<discovery_prefix>/status`` (HA restarted and lost non-retained state).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Tuple

from agent.pipeline.alert import DEFAULT_LABELS

STATUS_ONLINE = "online"

# (object id, name, value template on the stats JSON, unit, state_class, icon)
_STAT_SENSORS: Tuple[Tuple[str, str, str, str, str, str], ...] = (
    ("fps", "Frames per second", "{{ value_json.fps }}", "fps", "measurement", "mdi:speedometer"),
    (
        "compliance",
        "Mask compliance",
        "{% if value_json.compliance is not defined or value_json.compliance.ratio is none %}None"
        "{% else %}{{ (value_json.compliance.ratio * 100) | round(1) }}{% endif %}",
        "%",
        "measurement",
        "mdi:face-mask",
    ),
    # People whose track ended within the compliance window.
    ("people_mask", "People with mask", "{{ value_json.compliance.people.get('mask', 0) }}", "", "measurement", "mdi:face-mask"),
    ("people_no_mask", "People without mask", "{{ value_json.compliance.people.get('no_mask', 0) }}", "", "measurement", "mdi:account-alert"),
    (
        "people_incorrect_mask",
        "People with mask worn incorrectly",
        "{{ value_json.compliance.people.get('incorrect_mask', 0) }}",
        "",
        "measurement",
        "mdi:account-alert-outline",
    ),
    ("frames_dropped", "Dropped frames", "{{ value_json.get('dropped_frames', 0) }}", "", "total_increasing", "mdi:filmstrip-off"),
    ("spool_depth", "Alerts waiting for the broker", "{{ value_json.spool.depth }}", "", "measurement", "mdi:tray-full"),
)

Message = Tuple[str, Dict[str, Any]]


def node_id(camera: str) -> str:
    """The device's id in discovery topics and unique ids (``[a-zA-Z0-9_-]`` only)."""
    return "maskwatch_" + re.sub(r"[^A-Za-z0-9_-]", "_", camera)


def discovery_messages(prefix: str, camera: str, discovery_prefix: str = "homeassistant",
                       version: str = "", event_types: Sequence[str] = DEFAULT_LABELS) -> List[Message]:
    """(topic, config) pairs to publish retained; ``prefix`` is the agent's topic prefix, ``event_types``
    the labels that raise an alert (``alerts.labels``, checked against the classifier's sidecar)."""
    node = node_id(camera)
    device: Dict[str, Any] = {
        "identifiers": [node],
        "name": f"maskwatch {camera}",
        "manufacturer": "maskwatch",
        "model": "maskwatch edge agent",
    }
    if version:
        device["sw_version"] = version
    common: Dict[str, Any] = {
        "device": device,
        "origin": {"name": "maskwatch", **({"sw_version": version} if version else {})},
        "availability": [
            {
                "topic": prefix + "availability",
                # "stopped" (clean exit) and "offline" (Last Will) both mean unavailable.
                "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ],
    }
    out: List[Message] = []
    out.append((
        f"{discovery_prefix}/event/{node}/alert/config",
        {
            **common,
            "name": "Mask alert",
            "unique_id": f"{node}_alert",
            "state_topic": prefix + "alert",
            "event_types": list(event_types),
            # HA wants {"event_type": ...}; the other keys become the event's attributes.
            "value_template": (
                "{{ {'event_type': value_json.label, 'id': value_json.id, 'score': value_json.score,"
                " 'track': value_json.track, 'time': value_json.time, 'camera': value_json.camera} | tojson }}"
            ),
            "icon": "mdi:face-mask-outline",
        },
    ))
    for obj, name, template, unit, state_class, icon in _STAT_SENSORS:
        cfg: Dict[str, Any] = {
            **common,
            "name": name,
            "unique_id": f"{node}_{obj}",
            "state_topic": prefix + "stats",
            "value_template": template,
            "state_class": state_class,
            "icon": icon,
        }
        if unit:
            cfg["unit_of_measurement"] = unit
        out.append((f"{discovery_prefix}/sensor/{node}/{obj}/config", cfg))
    out.append((
        f"{discovery_prefix}/binary_sensor/{node}/camera/config",
        {
            **common,
            "name": "Camera",
            "unique_id": f"{node}_camera",
            "state_topic": prefix + "camera",
            "payload_on": "up",
            "payload_off": "down",
            "device_class": "connectivity",
        },
    ))
    return out


def status_topic(discovery_prefix: str = "homeassistant") -> str:
    """Where Home Assistant announces ``online`` / ``offline`` (its birth and last will)."""
    return f"{discovery_prefix}/status"
