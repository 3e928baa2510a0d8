"""Flow control: pausing and resuming queues and lanes (and what makes a queue wait)."""
