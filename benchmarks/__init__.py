"""Speed and memory measurements, as ratios against a baseline measured in the same run."""
