"""Behaviour: per-flow features, the online clusterer with stable IDs and labels,
per-cluster statistics and the hosts view.

Pure (numpy, scipy, scikit-learn); the clusterer has one owner at a time (the engine's
cluster worker thread), the statistics are the reactor thread's. Imports flows, core."""
