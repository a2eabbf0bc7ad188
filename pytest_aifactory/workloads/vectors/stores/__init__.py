"""Vector store adapters: the protocol and store names in ``base``, one module per database."""

__all__: list[str] = []
