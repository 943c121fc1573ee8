"""Run a GodRun on this machine: the controller's state machine driving local processes."""
