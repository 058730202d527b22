"""Training: the loop, its config and the dense checkpoint schedules."""
