"""The run's contract: the words (phases, reasons, conditions, stages, labels), the layout of every path and
file name, the stage command lines and the formats the processes exchange (checkpoint, gauges, termination
message, job record), each with one home. Torch-free and executor-free: every other package may import it,
it imports only `godrun.spec`, `godrun.errors` and itself."""
