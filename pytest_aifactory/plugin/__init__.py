"""The pytest layer: options, lazy run context, fixtures and hook plugins."""
