"""Jobs from the application's side: validating and deferring them (``jobsys.defer``)."""
