"""Live operational updates over Postgres NOTIFY: publishing, coalescing, subscribing."""
