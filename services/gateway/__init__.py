"""The public gateway: validates, admits and queues requests; never runs a model."""
