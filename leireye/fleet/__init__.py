"""Many sensors, one console: publishing into NATS JetStream and the central that reads it."""
