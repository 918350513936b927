"""The recursive collapse loop's ground truth (exact expectations for a categorical model refitted on
its own samples) and the trajectory of a run's training data across generations."""
