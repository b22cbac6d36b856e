"""The recursive diffusion: EDM helpers and the sampler with 3D-aware feedback."""
