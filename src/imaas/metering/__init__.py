"""Usage metering: per key x model x version x task x day, recorded off the request path."""
