"""Training: datasets of rendered objects and the joint trainer (o3d train)."""
