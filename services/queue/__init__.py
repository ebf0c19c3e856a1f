"""Redis streams that carry requests to model services and replies back to gateways."""
