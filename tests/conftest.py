import os

# Tests run on the CPU; keep XLA from grabbing every core for its thread pools' warm-up.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
