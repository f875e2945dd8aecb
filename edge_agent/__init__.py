"""Edge agent: the line-PC runtime (device capture, batch binding, outbox, publishing)."""
