"""Workloads: what requests to send and the clients that send them, per protocol; ``LoadRunner`` drives them."""
