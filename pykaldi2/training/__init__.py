"""Training: one trainer loop for every criterion, distributed set-up, checkpoints, logging."""
