"""``coopetition zoom``: dense checkpoints, after the fact, where a run turned out to be interesting
(docs/zoom.md). The re-training itself is ``coopetition.train.zoom``; this package resolves the window (steps or an
event of the run's eval log) and is the command."""
