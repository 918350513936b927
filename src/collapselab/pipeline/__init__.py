"""The stage graph of an experiment and the executors that run it."""
