import os
import shutil
import tempfile

import jax
import pytest

# Tests run on the CPU; keep XLA from grabbing every core for its thread pools' warm-up.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is mostly XLA compilation of small training programs. Two CPU compiler settings
# cut it by more than half (benchmarks/RESULTS.md, "Compile time of the test suite"): without
# XLA's CPU fusion emitters (on by default; they take about a third of the compile time here
# and do not make these programs faster) and at LLVM optimisation level 0 (purerl.jit leaves
# the level to XLA_FLAGS when it is set there). Every process of the session, subprocesses
# included (they inherit the variable), compiles this way, so results compared across
# processes come from the same compiler. The learning checks (marked slow) run long programs:
# they compile at purerl's own level 1 (the fixture below), whose programs run 1.5-5x faster.
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
if "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = TEST_XLA_FLAGS

_CACHE_ENV = "PURERL_TEST_XLA_CACHE"


def pytest_configure(config):
    # Many tests build the same small program (a trainer's small config, vmapped over two seeds)
    # in different files. A compilation cache made for this run and shared by its xdist workers
    # (they inherit the variable) compiles each once; a hit loads the same executable, so
    # results are unchanged.
    if _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="purerl-tests-xla-")
        config._purerl_cache_owner = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def pytest_unconfigure(config):
    if getattr(config, "_purerl_cache_owner", False):
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


@pytest.fixture(autouse=True)
def _learning_checks_compile_optimised(request, monkeypatch):
    """purerl.jit at purerl's CPU level (1) inside tests marked slow (see TEST_XLA_FLAGS)."""
    if request.node.get_closest_marker("slow") is not None:
        from purerl import loop

        monkeypatch.setattr(loop, "compiler_options",
                            lambda: {"xla_backend_optimization_level": 1})
