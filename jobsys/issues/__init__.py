"""Issues: failures grouped by fingerprint, plus queue and service health, with a lifecycle."""
