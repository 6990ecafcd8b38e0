import os
import shutil
import tempfile

import jax
import pytest

# Tests run on the CPU; keep XLA from grabbing every core for its thread pools' warm-up.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite is mostly XLA compilation of small training programs. XLA's CPU fusion emitters
# (on by default) take about a third of their compile time and do not make them run faster
# (benchmarks/RESULTS.md, "Compile time of the test suite"), so every process of the session,
# subprocesses included (they inherit the variable), compiles without them: results compared
# across processes come from the same compiler. LLVM's level 1 is what purerl.jit asks for on
# the CPU; set here, it also holds for the tests' plain jax.jit (XLA's default is 2: 27-54%
# more compile time for the small trainer programs). Level 0 would halve compile time again,
# but at level 0 a chunked run is no longer bitwise the one-call run (docs/contract.md), and its
# last-bit differences can send a run down another trajectory. So level 0 only where no run is
# compared with a level-1 run: short programs checked against a learned target with a margin
# (helpers.jit_level0), tests of what a run prints, saves or reports and tests that compare
# runs they all compile themselves to float32 tolerance (the purerl_jit_level0 fixture,
# helpers.purerl_jit_at_level0), and subprocesses whose runs are compared with each other
# (helpers.subprocess_xla_flags).
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=1"
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


@pytest.fixture
def purerl_jit_level0():
    """``purerl.jit`` at LLVM level 0 for one test (helpers.purerl_jit_at_level0)."""
    from helpers import purerl_jit_at_level0

    with purerl_jit_at_level0():
        yield
