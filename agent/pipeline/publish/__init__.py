"""Where events go: stdout (JSON lines), MQTT (with its spool and Home Assistant discovery)."""
