"""One module per verb. Commands do the work; they return an exit code and never parse arguments."""
