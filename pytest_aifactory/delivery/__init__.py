"""Delivery to observability servers: Pushgateway and Loki clients that spool what they cannot send."""
