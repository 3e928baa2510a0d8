"""Pipelines: stages of steps run as jobs, each stage enqueued when the previous one
succeeds (``definitions``: declaring them; ``store``: their rows and transitions;
``service``: ``jobsys pipelines ...``; ``middleware``: keeping steps in step with their
jobs)."""
