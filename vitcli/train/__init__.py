"""Training: strategy, optimizer recipes, the distributed training loop, run directories."""
