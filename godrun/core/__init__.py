"""What both executors share: the pure GodRun state machine, derived names, the stage commands. Never imports torch."""
